"""The one settings object. Every knob an operator can turn is here, read from
``CHRONIK_*`` environment variables and validated once at start-up."""

from __future__ import annotations

import re
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AwareDatetime,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "SettingsError", "load_settings"]

_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MIN_KEY_CHARS = 32


class SettingsError(Exception):
    """A setting has a value Chronik cannot use; the message names it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHRONIK_", extra="ignore", frozen=True)

    database_url: SecretStr | None = Field(
        default=None, description="PostgreSQL URL; unset starts the embedded server."
    )
    nats_url: str | None = Field(
        default=None,
        description="NATS URL, or a comma-separated list of a cluster's servers;"
        " unset starts the embedded server.",
    )
    nats_namespace: str = Field(
        default="chronik",
        pattern=r"^[a-z][a-z0-9_]{0,30}$",
        description="Prefix of NATS subjects and streams, so deployments can share a server.",
    )
    http_host: str = Field(
        default="127.0.0.1",
        description="Address the API listens on; 0.0.0.0 in a container.",
    )
    http_port: int = Field(
        default=8000, ge=0, le=65535, description="Port the API listens on (0: a free one)."
    )
    worker_metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="Port on CHRONIK_HTTP_HOST where `chronik worker` serves /metrics (0: off)."
        " Each worker process on one host needs its own.",
    )
    http_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="API server processes (`chronik api`); on 2 cores with PostgreSQL"
        " elsewhere, 2. Each has its own pools and group committer.",
    )
    data_dir: Path = Field(
        default=Path(".chronik"), description="Where the embedded servers keep data."
    )
    operator_token: SecretStr | None = Field(
        default=None, description="May create teams over HTTP."
    )
    webhook_allowed_networks: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list, description="Comma-separated CIDRs that bypass the SSRF guard."
    )
    smtp_host: str = Field(default="127.0.0.1", description="SMTP server for outgoing email.")
    smtp_port: int = Field(default=25, ge=1, le=65535, description="SMTP server port.")
    smtp_username: str | None = Field(
        default=None, description="SMTP login; unset: no authentication."
    )
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password.")
    smtp_starttls: bool = Field(
        default=False, description="Upgrade the plain SMTP connection with STARTTLS."
    )
    email_from: str = Field(
        default="chronik@localhost", description="Sender address of outgoing email."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest level of log records written."
    )
    log_format: Literal["json", "console"] = Field(
        default="json", description="One JSON object per line, or `console` for humans."
    )
    tracing: Literal["off", "otlp", "console"] = Field(
        default="off",
        description="OpenTelemetry tracing: `off` (no provider: every span a no-op), `otlp`"
        " (OTLP/HTTP to CHRONIK_OTLP_ENDPOINT) or `console` (spans printed to stdout).",
    )
    otlp_endpoint: str = Field(
        default="http://127.0.0.1:4318",
        pattern=r"^https?://",
        description="Base URL of the OTLP/HTTP collector; spans are posted to <url>/v1/traces.",
    )
    tracing_service_name: str = Field(
        default="chronik",
        min_length=1,
        description="Service name of traced processes; each adds its role (chronik-api,"
        " chronik-worker).",
    )
    tracing_sample_ratio: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of new traces recorded; a trace that arrives sampled (a client's"
        " traceparent, one stored with the events) keeps its decision.",
    )
    db_pool_size: int = Field(
        default=10, ge=1, le=200, description="Connections per database pool of a process."
    )
    group_commit_max: int = Field(
        default=64,
        ge=1,
        le=1024,
        description="Commands one API or worker process appends in one transaction at most"
        " (group commit); 1 gives every command a transaction of its own.",
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=64 * 1_048_576,
        description="Largest request body accepted; larger ones get 413 PAYLOAD_TOO_LARGE.",
    )
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
    events_stream_max_age: float = Field(
        default=7 * 86_400, gt=0, description="Seconds JetStream keeps published events."
    )
    events_stream_max_bytes: int = Field(
        default=1 << 30, ge=-1, description="Bytes JetStream keeps of events (-1: no limit)."
    )
    events_stream_replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description="Copies JetStream keeps of the events stream; 3 on a NATS cluster.",
    )
    events_duplicate_window: float = Field(
        default=600, gt=0, le=86_400, description="Seconds JetStream drops republished events."
    )
    relay_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Events the relay publishes per batch."
    )
    relay_ack_timeout: float = Field(
        default=10, gt=0, le=300, description="Seconds the relay waits for JetStream's acks."
    )
    webhook_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18_000.0, 36_000.0, 36_000.0],
        description="Comma-separated seconds before each attempt of a delivery.",
    )
    webhook_timeout: float = Field(
        default=15, gt=0, le=120, description="Seconds a receiver has to answer."
    )
    webhook_response_cap: int = Field(
        default=65_536, ge=0, le=1_048_576, description="Bytes read of a receiver's answer."
    )
    webhook_claim_lease: float = Field(
        default=60,
        gt=0,
        le=3600,
        description="Seconds a claimed delivery is reserved; a killed worker's claims expire.",
    )
    webhook_concurrency: int = Field(
        default=64, ge=1, le=1024, description="Deliveries one worker sends at once."
    )
    webhook_disable_after: float = Field(
        default=5 * 86_400,
        gt=0,
        description="Seconds of failing with no success before an endpoint is disabled.",
    )
    audit_signing_keys: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict,
        description="Comma-separated key_id:secret pairs that sign audit checkpoints; the "
        "first signs, all verify. Unset: checkpoints are recorded unsigned.",
    )
    audit_checkpoint_every: int = Field(
        default=1000, ge=1, le=1_000_000, description="Events between signed audit checkpoints."
    )
    audit_verify_max_events: int = Field(
        default=200_000,
        ge=1,
        description="Events one GET /v1/audit/verify checks at most (the CLI has no cap).",
    )
    smtp_tls: bool = Field(default=False, description="Implicit TLS (port 465), not STARTTLS.")
    smtp_timeout: float = Field(
        default=30, gt=0, le=300, description="Seconds an SMTP exchange may take."
    )
    email_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [0.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0],
        description="Comma-separated seconds before each attempt of an email.",
    )
    email_concurrency: int = Field(default=4, ge=1, le=64, description="Emails sent at once.")
    email_claim_lease: float = Field(
        default=120, gt=0, le=3600, description="Seconds a claimed email is reserved."
    )
    digest_hour: int = Field(
        default=8, ge=0, le=23, description="UTC hour at which daily digests are sent."
    )
    scheduler_interval: float = Field(
        default=5.0, gt=0, le=300, description="Seconds between the scheduler's looks."
    )
    prompt_catchup_limit: int = Field(
        default=10,
        ge=0,
        le=10_000,
        description="Missed due times of a prompt issued after downtime (the latest ones).",
    )
    scheduler_time_scale: float = Field(
        default=1.0, gt=0, le=10_000, description="Tests and demos: the scheduler's clock speed."
    )
    scheduler_time_origin: AwareDatetime | None = Field(
        default=None, description="Tests and demos: when the scaled clock starts (RFC 3339)."
    )
    read_wait_timeout: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="How long a read with min_position waits before 503 STALE_READ.",
    )
    # -- Limits and security headers (docs/operations.md, "Limits and security").
    # Rates are per API process: with N processes a key gets up to N times them.
    rate_limit_owner: float = Field(
        default=1000,
        ge=0,
        description="Requests/s one owner key may make to one API process (0: no limit).",
    )
    rate_limit_admin: float = Field(
        default=1000,
        ge=0,
        description="Requests/s one admin key may make to one API process (0: no limit).",
    )
    rate_limit_member: float = Field(
        default=500,
        ge=0,
        description="Requests/s one member key may make to one API process (0: no limit).",
    )
    rate_limit_auditor: float = Field(
        default=500,
        ge=0,
        description="Requests/s one auditor key may make to one API process (0: no limit).",
    )
    rate_limit_burst_seconds: float = Field(
        default=5,
        gt=0,
        le=3600,
        description="A key may burst to this many seconds' worth of its rate at once"
        " (at least one request).",
    )
    rate_limit_max_buckets: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        description="Keys (and client addresses) whose buckets one API process remembers;"
        " the least recently seen are dropped first.",
    )
    auth_failure_limit: int = Field(
        default=30,
        ge=1,
        le=100_000,
        description="Failed authentications one client address may make per"
        " CHRONIK_AUTH_FAILURE_WINDOW before it gets 429.",
    )
    auth_failure_window: float = Field(
        default=60,
        gt=0,
        le=86_400,
        description="Seconds over which CHRONIK_AUTH_FAILURE_LIMIT failures refill.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins (https://app.example.com) browsers may call the"
        " API from; * for any; empty: no CORS headers.",
    )
    cors_max_age: int = Field(
        default=600, ge=0, le=86_400, description="Seconds browsers may cache a CORS preflight."
    )
    hsts_max_age: int = Field(
        default=0,
        ge=0,
        le=63_072_000,
        description="Strict-Transport-Security max-age in seconds; 0 sends no HSTS header"
        " (set it only when clients reach the API over HTTPS alone).",
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origin_shape(cls, value: list[str]) -> list[str]:
        for origin in value:
            parts = urlsplit(origin)
            exact = f"{parts.scheme}://{parts.netloc}" == origin
            if origin != "*" and not (parts.scheme in ("http", "https") and exact):
                raise ValueError(f"{origin!r} is not an origin such as https://app.example.com")
        return value

    @field_validator("audit_signing_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        keys: dict[str, str] = {}
        for pair in filter(None, (part.strip() for part in value.split(","))):
            key_id, sep, secret = pair.partition(":")
            if not sep or not _KEY_ID.fullmatch(key_id) or len(secret) < _MIN_KEY_CHARS:
                # Never echo the value: it holds secrets.
                raise ValueError(
                    f"each key must be key_id:secret, the id 1-64 of [A-Za-z0-9._-], "
                    f"the secret at least {_MIN_KEY_CHARS} characters"
                )
            if key_id in keys:
                raise ValueError(f"key id {key_id!r} is listed twice")
            keys[key_id] = secret
        return keys

    @field_validator("webhook_retry_schedule", "email_retry_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_retry_schedule", "email_retry_schedule")
    @classmethod
    def _schedule_shape(cls, value: list[float]) -> list[float]:
        if not value or any(delay < 0 for delay in value):
            raise ValueError("must be one or more delays in seconds, none negative")
        return value

    @model_validator(mode="after")
    def _lease_outlasts_a_send(self) -> Settings:
        # A claim that expired mid-send would let a second worker send again.
        if self.webhook_claim_lease <= self.webhook_timeout:
            raise ValueError(
                "CHRONIK_WEBHOOK_CLAIM_LEASE must be longer than CHRONIK_WEBHOOK_TIMEOUT"
            )
        if self.email_claim_lease <= self.smtp_timeout:
            raise ValueError("CHRONIK_EMAIL_CLAIM_LEASE must be longer than CHRONIK_SMTP_TIMEOUT")
        if self.smtp_tls and self.smtp_starttls:
            raise ValueError(
                "CHRONIK_SMTP_TLS (implicit TLS) and CHRONIK_SMTP_STARTTLS exclude each other"
            )
        return self

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
        for server in value.split(","):
            parts = urlsplit(server.strip())
            if parts.scheme not in ("nats", "tls") or not parts.hostname:
                raise ValueError("must look like nats://host:port[,nats://host:port...]")
            try:
                parts.port  # noqa: B018
            except ValueError as exc:
                raise ValueError("has an invalid port") from exc
        return value

    def nats_servers(self) -> list[str]:
        """The NATS servers to connect to, in order."""
        if self.nats_url is None:
            raise SettingsError("CHRONIK_NATS_URL is not set and no embedded server was started")
        return [server.strip() for server in self.nats_url.split(",")]

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
            if error["loc"]:
                problems.append(f"CHRONIK_{str(error['loc'][0]).upper()}: {error['msg']}")
            else:  # a rule across settings names them itself
                problems.append(str(error["msg"]).removeprefix("Value error, "))
        raise SettingsError("invalid setting " + "; ".join(problems)) from None
