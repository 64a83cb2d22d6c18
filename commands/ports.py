"""What the command layer needs from storage, as protocols; infra implements them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from uuid import UUID

from aggregates.base import Aggregate, EventMetadata
from commands.records import CommandRecord

__all__ = ["Conflict", "EventStorePort", "StoredResponse", "Unavailable", "UrlGuard"]

A = TypeVar("A", bound=Aggregate)

UrlGuard = Callable[[str], str]
"""Judges a webhook URL before it is stored: returns the URL to store or raises
``aggregates.errors.InvalidValue`` (field ``url``). Infra's implementation also
resolves the host name (``infra.outbound.check_webhook_target``); the pure
rules alone are ``commands.url_policy.check_webhook_url``."""


class Conflict(Exception):
    """The save lost a race: an aggregate's version, a unique id or an
    idempotency key was taken by a transaction that committed first."""


class Unavailable(Exception):
    """A dependency (the database) cannot be reached right now."""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    request_fingerprint: str
    status_code: int
    response: dict[str, Any]


class EventStorePort(Protocol):
    def get(self, aggregate_id: UUID, cls: type[A]) -> A | None: ...

    def get_if_current(self, aggregate_id: UUID, cls: type[A]) -> A | None:
        """A copy from memory, when it is known to be current and no other
        thread is loading it; None otherwise (``get`` would wait or query)."""
        ...

    def save(
        self,
        aggregates: Sequence[Aggregate],
        *,
        metadata: EventMetadata,
        records: Sequence[CommandRecord] = (),
    ) -> list[int]:
        """Append all pending events and records in one transaction; the
        positions of the appended events, in order. Raises Conflict."""
        ...

    def head_position(self) -> int: ...

    def find_idempotent_response(self, team_id: UUID, key: str) -> StoredResponse | None: ...

    def team_of_key(self, key_id: str) -> UUID | None: ...
