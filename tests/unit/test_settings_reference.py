"""The settings reference in docs/operations.md is the one the generator makes
from ``infra.settings.Settings``, and every setting says what it is for."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from infra import settings_reference
from infra.settings import Settings
from infra.settings_reference import BEGIN, DOC, END, REGENERATE, render, rewrite


def test_every_setting_has_a_description() -> None:
    missing = settings_reference.missing_descriptions()
    assert not missing, f"add description= to these fields in infra/settings.py: {missing}"


def test_the_doc_block_is_what_the_generator_makes() -> None:
    text = DOC.read_text()
    assert text.count(BEGIN) == 1, f"{DOC} needs exactly one {BEGIN!r}"
    assert text.count(END) == 1, f"{DOC} needs exactly one {END!r}"
    current = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert current == render(), f"the settings reference in {DOC} is stale; run: {REGENERATE}"


def test_each_field_is_one_row_with_its_env_var_and_default() -> None:
    block = render()
    rows = [line for line in block.splitlines() if line.startswith("| `CHRONIK_")]
    assert len(rows) == len(Settings.model_fields)
    assert "| `CHRONIK_HTTP_PORT` | integer (0 ≤ x ≤ 65535) | `8000` |" in block
    assert "| `CHRONIK_LOG_FORMAT` | one of `json`, `console` | `json` |" in block
    assert "`0,5,300,1800,7200,18000,36000,36000`" in block


def test_secret_defaults_are_shown_redacted() -> None:
    class WithSecret(BaseSettings):
        token: SecretStr = Field(default=SecretStr("hunter2-hunter2"), description="A secret.")

    default = settings_reference._default(WithSecret.model_fields["token"])
    assert "hunter2" not in default
    assert default == "`**********`"


def test_rewrite_replaces_only_the_block() -> None:
    text = f"# Ops\n\nbefore\n\n{BEGIN}\nold table\n{END}\n\nafter\n"
    fresh = rewrite(text)
    assert fresh.startswith("# Ops\n\nbefore\n\n")
    assert fresh.endswith("\n\nafter\n")
    assert "old table" not in fresh
    assert render() in fresh
    assert rewrite(fresh) == fresh
