"""What a projection is: a named, versioned read model fed events in batches.

A projection owns some tables. Its ``ddl`` creates them in whatever schema is
first on the search path, so the engine can build a new generation of them
beside the live one. ``apply`` writes one batch with set-based SQL inside the
transaction that also records the batch's position: a batch is applied
completely, together with its tracking, or not at all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple
from uuid import UUID

import psycopg
from eventsourcing.utils import get_topic

from aggregates.base import Aggregate, DomainEvent

__all__ = ["Cursor", "Decode", "Fact", "LoggedEvent", "Projection", "topic_of"]

Cursor = psycopg.Cursor[dict[str, Any]]


class LoggedEvent(NamedTuple):
    """An event as stored in the log, at position ``id``: the fields of the
    library's ``Notification``, as a tuple. A rebuild reads every event, and a
    frozen dataclass costs about 1 µs more to make (bench B3)."""

    id: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes


Decode = Callable[[LoggedEvent], DomainEvent]


def topic_of(aggregate: type[Aggregate], event_name: str) -> str:
    """The stored topic of ``aggregate``'s event class ``event_name``
    (the classes are made by ``@event`` at runtime, so names, not attributes)."""
    return f"{get_topic(aggregate)}.{event_name}"


@dataclass(frozen=True, slots=True)
class Fact:
    """A decoded event and where it sits in the global log."""

    position: int
    topic: str
    event: DomainEvent
    # The event class's own name, e.g. ``Edited`` (folds ask it several times).
    name: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.topic.rpartition(".")[2])

    @property
    def data(self) -> dict[str, Any]:
        """The event's fields (the classes are made at runtime, so no attributes
        a type checker could see)."""
        return self.event.__dict__

    @property
    def aggregate_id(self) -> Any:
        return self.event.originator_id

    @property
    def version(self) -> int:
        return self.event.originator_version


class Projection(ABC):
    name: ClassVar[str]
    # Bump when the tables or the handling change: a new generation is then
    # built from position 0 beside the live one and swapped in when caught up.
    version: ClassVar[int]
    # Tables readers see, as views ``reads.<table>``.
    tables: ClassVar[tuple[str, ...]]
    ddl: ClassVar[str]
    # Whether ``chronik replay`` rebuilds it with the others (the audit ledger
    # is not rebuilt casually: see projections/audit_ledger.py).
    replayable: ClassVar[bool] = True
    # Whether every batch's commit waits for its WAL to reach disk. Otherwise
    # only live batches wait: a generation being built is unseen by readers
    # until its durable activation, so a batch a PostgreSQL crash loses is
    # built again from the log (projections/runner.py).
    durable_commits: ClassVar[bool] = False

    @property
    @abstractmethod
    def topics(self) -> frozenset[str]:
        """The stored topics this projection reads; others are not even decoded."""

    @abstractmethod
    def apply(self, cur: Cursor, facts: Sequence[Fact]) -> None:
        """Write ``facts`` (in position order) to this projection's tables."""

    def apply_batch(self, cur: Cursor, batch: Sequence[LoggedEvent], decode: Decode) -> int:
        """Apply a batch as read from the log; returns how many events it applied.
        Only the topics this projection reads are decoded."""
        topics = self.topics
        facts = [Fact(n.id, n.topic, decode(n)) for n in batch if n.topic in topics]
        self.apply(cur, facts)
        return len(facts)

    def __repr__(self) -> str:
        return f"<projection {self.name} v{self.version}>"
