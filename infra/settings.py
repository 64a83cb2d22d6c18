"""The one settings object. Every knob an operator can turn is here, read from
``CHRONIK_*`` environment variables and validated once at start-up."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "SettingsError", "load_settings"]


class SettingsError(Exception):
    """A setting has a value Chronik cannot use; the message names it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHRONIK_", extra="ignore", frozen=True)

    database_url: SecretStr | None = Field(
        default=None, description="PostgreSQL URL; unset starts the embedded server."
    )
    nats_url: str | None = Field(
        default=None, description="NATS URL; unset starts the embedded server."
    )
    nats_namespace: str = Field(
        default="chronik",
        pattern=r"^[a-z][a-z0-9_]{0,30}$",
        description="Prefix of NATS subjects and streams, so deployments can share a server.",
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    data_dir: Path = Field(
        default=Path(".chronik"), description="Where the embedded servers keep data."
    )
    operator_token: SecretStr | None = Field(
        default=None, description="May create teams over HTTP."
    )
    webhook_allowed_networks: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list, description="Comma-separated CIDRs that bypass the SSRF guard."
    )
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    email_from: str = "chronik@localhost"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    db_pool_size: int = Field(default=10, ge=1, le=200)
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    projection_batch_size: int = Field(
        default=500, ge=1, le=50_000, description="Events a projection applies per transaction."
    )
    projection_poll_interval: float = Field(
        default=1.0, gt=0, le=60, description="Seconds between polls if a NOTIFY is missed."
    )
    sync_tombstone_retention_days: float = Field(
        default=30, gt=0, le=3650, description="How long sync keeps deletes; older cursors expire."
    )
    sync_compaction_interval: float = Field(
        default=3600, gt=0, le=86_400, description="Seconds between sync tombstone purges."
    )
    read_wait_timeout: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="How long a read with min_position waits before 503 STALE_READ.",
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
            raise ValueError("must look like postgresql://user@host:port/dbname")
        try:
            parts.port  # noqa: B018 - urlsplit raises on a non-numeric port only when asked
        except ValueError as exc:
            raise ValueError("has an invalid port") from exc
        return value

    @field_validator("nats_url")
    @classmethod
    def _nats_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("nats", "tls") or not parts.hostname:
            raise ValueError("must look like nats://host:port")
        try:
            parts.port  # noqa: B018
        except ValueError as exc:
            raise ValueError("has an invalid port") from exc
        return value

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def database_url_value(self) -> str:
        if self.database_url is None:
            raise SettingsError(
                "CHRONIK_DATABASE_URL is not set and no embedded server was started"
            )
        return self.database_url.get_secret_value()


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; one clear message per bad value."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            problems.append(f"CHRONIK_{field.upper()}: {error['msg']}")
        raise SettingsError("invalid setting " + "; ".join(problems)) from None
