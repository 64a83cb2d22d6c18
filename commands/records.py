"""Rows a command writes beside its events, in the same transaction.

Plain typed messages: the command layer says *what* to record; infra knows the
SQL. Positions are only known once the events are inserted, so records that
need them get them then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

__all__ = [
    "ApiKeyIndexed",
    "CommandRecord",
    "IdempotencyRecorded",
    "WebhookSecretRetiring",
    "WebhookSecretStored",
]


@dataclass(frozen=True, slots=True)
class IdempotencyRecorded:
    team_id: UUID
    idempotency_key: str
    request_fingerprint: str
    status_code: int
    # The response without its position; the position is added when known.
    response: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ApiKeyIndexed:
    key_id: str
    team_id: UUID


@dataclass(frozen=True, slots=True)
class WebhookSecretStored:
    secret_id: str
    endpoint_id: UUID
    team_id: UUID
    secret: str


@dataclass(frozen=True, slots=True)
class WebhookSecretRetiring:
    """A rotated-out secret keeps signing until ``valid_until``."""

    secret_id: str
    valid_until: datetime


CommandRecord = IdempotencyRecorded | ApiKeyIndexed | WebhookSecretStored | WebhookSecretRetiring
