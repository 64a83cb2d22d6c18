"""Base classes every aggregate and event builds on.

Events are frozen pydantic models so that the stored JSON is typed by the
event's own fields: UUIDs, UTC datetimes and Decimals come back exactly as
they went in, with no type tags in the stored bytes.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Self
from uuid import UUID

from eventsourcing.domain import (
    Aggregate as LibraryAggregate,
)
from eventsourcing.domain import (
    BaseAggregate,
    CanInitAggregate,
    CanMutateAggregate,
    CanSnapshotAggregate,
)
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

__all__ = [
    "Actor",
    "Aggregate",
    "AggregateSnapshot",
    "DomainError",
    "DomainEvent",
    "EventMetadata",
    "Forbidden",
    "NotFound",
    "Role",
    "SnapshotState",
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

    @property
    def may_audit(self) -> bool:
        """Whether this member may read the audit trail."""
        return self.role in (Role.OWNER, Role.ADMIN, Role.AUDITOR)


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
    # The W3C trace context of the append that stored the event (tracing on),
    # so projections, the relay and webhook deliveries continue its trace.
    traceparent: str | None = None

    @model_serializer(mode="wrap")
    def _without_absent_trace(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Untraced events are stored byte for byte as before the field existed.
        data: dict[str, Any] = handler(self)
        if data.get("traceparent") is None:
            data.pop("traceparent", None)
        return data


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
    """An aggregate whose events are typed pydantic models.

    Its attributes hold immutable values, or dicts, lists or sets of them
    (tests/unit/domain/test_aggregate_copies.py checks each aggregate), so a
    deep copy copies those containers and nothing inside them.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        # The event store hands out and caches copies, several per request:
        # copy.deepcopy's walk of every value cost more than the rest of a
        # cached load (a team's members and keys are frozen records).
        copied = object.__new__(type(self))
        copied.__dict__.update({k: _copy_container(v) for k, v in self.__dict__.items()})
        return copied

    class Event(DomainEvent, CanMutateAggregate[UUID]):
        pass

    class Created(Event, CanInitAggregate[UUID]):
        originator_topic: str


def _copy_container(value: Any) -> Any:
    kind = type(value)
    return kind(value) if kind in (dict, list, set) else value


class SnapshotState(BaseModel):
    """An aggregate's whole state, typed, for a snapshot. Each subclass declares
    every attribute of its aggregate; private ones by alias, since a pydantic
    field cannot start with "_". ``extra="forbid"``: an attribute added to the
    aggregate but not here makes taking a snapshot fail instead of writing one
    that silently forgets it."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True
    )

    created_on: datetime = Field(alias="_created_on")
    modified_on: datetime = Field(alias="_modified_on")


class AggregateSnapshot(DomainEvent, CanSnapshotAggregate[UUID]):
    """A pydantic snapshot (the library's ``Snapshot`` is a dataclass our mapper
    cannot store). Subclasses narrow ``state`` to their aggregate's SnapshotState.
    The library's ``take`` fills it from the aggregate's attributes (validated by
    alias). Reshaping a state later means ``class_version`` and ``upcast_vX_vY`` on
    the snapshot class, applied by the mapper as for events; never on the
    aggregate class, whose version ``take`` would put into the state."""

    topic: str
    state: SnapshotState

    def mutate(self, _: None) -> BaseAggregate[UUID]:
        # The library rebuilds the aggregate from a dict of attribute names; ours
        # names private attributes by alias. Deep copies: the aggregate changes
        # its dicts in place, and the snapshot must not change with it.
        attributes = {
            field.alias or name: deepcopy(getattr(self.state, name))
            for name, field in type(self.state).model_fields.items()
        }
        by_attribute = self.model_copy(update={"state": attributes})
        return CanSnapshotAggregate.mutate(by_attribute, None)
