from __future__ import annotations

import logging

import orjson
import pytest
import structlog
from pydantic import SecretStr

from infra.logging import REDACTED, configure_logging, redact, settings_secrets
from infra.settings import Settings


@pytest.mark.parametrize(
    "text",
    [
        "Bearer chk_ab12cd34_s3cr3tS3cr3tS3cr3t",
        "key chk_ab12cd34_s3cr3tS3cr3tS3cr3t used",
        "signing with whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "postgresql://app:hunter2@db:5432/chronik",
    ],
)
def test_secret_values_are_redacted_in_text(text: str) -> None:
    redacted = redact(text)
    for secret in ("s3cr3tS3cr3t", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "hunter2"):
        assert secret not in redacted
    assert REDACTED in redacted


def test_secret_keys_are_redacted_whatever_their_value() -> None:
    assert redact({"password": "x", "nested": {"api_key": "y"}, "name": "z"}) == {
        "password": REDACTED,
        "nested": {"api_key": REDACTED},
        "name": "z",
    }


def test_log_lines_are_json_with_secrets_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    try:
        structlog.contextvars.bind_contextvars(request_id="req-123")
        structlog.get_logger("t").info("auth failed", token="chk_ab12cd34_zzzzzzzzzzzzzz")
        logging.getLogger("stdlib").warning("url postgresql://u:pw1234@h/db")
    finally:
        structlog.contextvars.clear_contextvars()
    lines = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["event"] == "auth failed"
    assert lines[0]["request_id"] == "req-123"
    assert lines[0]["token"] == REDACTED
    assert "pw1234" not in lines[1]["event"]


def test_a_libpq_conninfo_password_is_redacted() -> None:
    redacted = redact("connect host=db user=app password=hunter2xyz dbname=c")
    assert "hunter2xyz" not in redacted
    assert "dbname=c" in redacted
    assert "hunter2xyz" not in redact("password = 'hunter2xyz' host=db")


def test_the_settings_secrets_are_redacted_wherever_they_appear(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(
        operator_token=SecretStr("op-token-with-no-shape"),
        smtp_password=SecretStr("smtp pass with spaces"),
        database_url=SecretStr("postgresql://app:p%40ss-word@db:5432/chronik"),
        audit_signing_keys="k1:" + "a" * 40,
    )
    secrets = settings_secrets(settings)
    assert {"op-token-with-no-shape", "smtp pass with spaces", "p@ss-word", "a" * 40} <= set(
        secrets
    )
    configure_logging("INFO", "json", secrets=[*secrets, "short"])
    try:
        structlog.get_logger("t").info(
            "smtp said no to smtp pass with spaces", detail="op-token-with-no-shape!"
        )
        logging.getLogger("stdlib").warning("signing with %s, p@ss-word", "a" * 40)
        structlog.get_logger("t").info("a short word")
    finally:
        configure_logging("INFO", "json")
    out = capsys.readouterr().err
    for secret in secrets:
        assert secret not in out
    assert out.count(REDACTED) == 4
    # A value under 8 characters would redact ordinary words: left alone.
    assert '"a short word"' in out
