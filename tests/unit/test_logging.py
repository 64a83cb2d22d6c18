from __future__ import annotations

import logging

import orjson
import pytest
import structlog

from infra.logging import REDACTED, configure_logging, redact


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
