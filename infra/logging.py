"""Structured JSON logs. Request and correlation ids come from context
variables; anything that looks like a secret is redacted before output."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import orjson
import structlog

if TYPE_CHECKING:
    from infra.settings import Settings

__all__ = ["configure_logging", "logging_configured", "redact", "settings_secrets"]

_SECRET_KEYS = re.compile(r"(pass(word)?|secret|token|authorization|api_?key|cookie)", re.I)
_SECRET_VALUES = [
    re.compile(r"chk_[A-Za-z0-9]+_[A-Za-z0-9_-]+"),  # API keys
    re.compile(r"whsec_[A-Za-z0-9+/=_-]+"),  # webhook secrets
    re.compile(r"(?<=://)([^:/@\s]+):([^@\s]+)@"),  # credentials in URLs
    re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)(?<![A-Za-z0-9_])password\s*=\s*(?:'[^']*'|\S+)"),  # libpq conninfo
]
REDACTED = "[REDACTED]"
# Exact values known to be secret (from the settings, see settings_secrets):
# an operator token or SMTP password has no shape a pattern could find.
_known_secrets: tuple[str, ...] = ()
# Shorter values would redact common words; settings' secrets are far longer.
_MIN_KNOWN_SECRET = 8
_configured = False


def logging_configured() -> bool:
    """Whether this process ran configure_logging (a spawned one has not)."""
    return _configured


def settings_secrets(settings: Settings) -> list[str]:
    """The secret values in ``settings``: redacted wherever they appear."""
    values = [
        settings.operator_token,
        settings.smtp_password,
        *settings.audit_signing_keys.values(),
    ]
    found = [v.get_secret_value() for v in values if v is not None]
    if settings.database_url is not None:
        password = urlsplit(settings.database_url.get_secret_value()).password
        if password:
            found += [password, unquote(password)]
    return found


def _redact_text(text: str) -> str:
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _SECRET_VALUES:
        text = pattern.sub(
            lambda m: f"{m.group(1)}:{REDACTED}@" if m.re.groups >= 2 else REDACTED, text
        )
    return text


def redact(value: Any, key: str = "") -> Any:
    """A copy of ``value`` with secrets replaced by [REDACTED]."""
    if key and _SECRET_KEYS.search(key) and value is not None:
        return REDACTED
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def _redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    return {k: redact(v, k) for k, v in event_dict.items()}


def _orjson_dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record, so a
    replaced stderr (pytest's capture, a daemon redirect) is never written to
    after it was closed."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: str = "INFO", fmt: str = "json", secrets: Iterable[str] = ()) -> None:
    """Route structlog and stdlib logging (uvicorn, psycopg) through one JSON
    renderer; ``secrets`` (settings_secrets) are redacted wherever they appear."""
    global _known_secrets, _configured  # noqa: PLW0603 - one logging configuration per process
    _configured = True
    # Longest first: a secret containing another is replaced whole.
    _known_secrets = tuple(
        sorted({s for s in secrets if len(s) >= _MIN_KNOWN_SECRET}, key=len, reverse=True)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_processor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = _CurrentStderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
