"""Base classes every aggregate and event builds on.

Events are frozen pydantic models so that the stored JSON is typed by the
event's own fields: UUIDs, UTC datetimes and Decimals come back exactly as
they went in, with no type tags in the stored bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import (
    Aggregate as LibraryAggregate,
)
from eventsourcing.domain import CanInitAggregate, CanMutateAggregate
from pydantic import BaseModel, ConfigDict, field_validator

__all__ = [
    "Actor",
    "Aggregate",
    "DomainError",
    "DomainEvent",
    "EventMetadata",
    "Forbidden",
    "NotFound",
    "Role",
]


class DomainError(Exception):
    """A rule of the domain refused a command. ``code`` is the public error code."""

    code: ClassVar[str] = "DOMAIN_RULE"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Forbidden(DomainError):
    code = "FORBIDDEN"


class NotFound(DomainError):
    code = "NOT_FOUND"


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    AUDITOR = "auditor"


@dataclass(frozen=True, slots=True)
class Actor:
    """The member on whose behalf a command runs (from the API key)."""

    user_id: UUID
    role: Role
    team_id: UUID
    key_id: str | None = None

    @property
    def is_manager(self) -> bool:
        return self.role in (Role.OWNER, Role.ADMIN)


class EventMetadata(BaseModel):
    """Who caused an event, through which command, in which request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    team_id: UUID | None = None
    actor_user_id: UUID | None = None
    actor_key_id: str | None = None
    command: str | None = None
    idempotency_key: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    request_id: str | None = None


class DomainEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    originator_id: UUID
    originator_version: int
    timestamp: datetime
    metadata: EventMetadata | None = None

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC)


class Aggregate(LibraryAggregate):
    """An aggregate whose events are typed pydantic models."""

    class Event(DomainEvent, CanMutateAggregate[UUID]):
        pass

    class Created(Event, CanInitAggregate[UUID]):
        originator_topic: str
