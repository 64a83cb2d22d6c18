from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHRONIK = str(Path(sys.executable).parent / "chronik")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHRONIK_DATABASE_URL", "not a url"),
        ("CHRONIK_NATS_URL", "http://x"),
        ("CHRONIK_HTTP_PORT", "eighty"),
    ],
)
def test_a_bad_setting_exits_with_one_clear_line(variable: str, value: str) -> None:
    env = os.environ | {variable: value}
    result = subprocess.run(
        [CHRONIK, "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"chronik: invalid setting {variable}")
    assert "Traceback" not in result.stderr


def test_an_unreachable_database_exits_with_one_line_and_no_password() -> None:
    env = os.environ | {"CHRONIK_DATABASE_URL": "postgresql://app:hunter2@127.0.0.1:1/x"}
    result = subprocess.run(
        [CHRONIK, "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.startswith("chronik: cannot reach PostgreSQL")
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_applies_and_reports(database_url: str) -> None:
    env = os.environ | {"CHRONIK_DATABASE_URL": database_url}
    result = subprocess.run(
        [CHRONIK, "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "applied 0 migration(s)" in result.stdout  # the test database is already migrated


def test_bootstrap_creates_a_team_and_prints_its_owner_key(database_url: str) -> None:
    env = os.environ | {"CHRONIK_DATABASE_URL": database_url}
    result = subprocess.run(
        [CHRONIK, "bootstrap", "--team", "Acme", "--owner", "owner@example.com"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("team: ")
    assert lines[1].startswith("owner key: chk_")


def test_bootstrap_with_a_bad_email_says_so_in_one_line(database_url: str) -> None:
    env = os.environ | {"CHRONIK_DATABASE_URL": database_url}
    result = subprocess.run(
        [CHRONIK, "bootstrap", "--team", "Acme", "--owner", "not-an-email"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("chronik: owner_email:")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["projections", "rebuild", "entries", "--batch-size", "0"], 2, "must be 1 or more"),
        (["audit", "verify", "--from", "-1"], 2, "must be a position"),
        (["audit", "verify", "--from", "9", "--to", "3"], 1, "--to 3 is before --from 9"),
    ],
)
def test_bad_operator_arguments_are_refused_before_any_work(
    args: list[str], code: int, says: str
) -> None:
    result = subprocess.run([CHRONIK, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == code
    assert says in result.stderr
    assert "Traceback" not in result.stderr
