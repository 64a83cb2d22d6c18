"""The event store: the eventsourcing library's PostgreSQL persistence, wired
from our settings. Its notification id is Chronik's one global position."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate as LibraryAggregate
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, Recording, Transcoder
from eventsourcing.postgres import PostgresApplicationRecorder
from pydantic import BaseModel

from aggregates.base import EventMetadata
from infra.db import PostgresTarget
from infra.serialization import OrjsonTranscoder, PydanticMapper

__all__ = ["EVENTS_TABLE", "EventStore", "open_event_store"]

APPLICATION_NAME = "Chronik"
EVENTS_TABLE = "chronik_events"


class EventStore(Application[UUID]):
    """Saves aggregates' pending events, stamped with who caused them."""

    name = APPLICATION_NAME

    def construct_transcoder(self) -> Transcoder:
        return OrjsonTranscoder()

    def construct_mapper(self) -> Mapper[UUID]:
        return PydanticMapper(transcoder=self.construct_transcoder())

    @property
    def recorder_(self) -> PostgresApplicationRecorder:
        recorder = self.recorder
        assert isinstance(recorder, PostgresApplicationRecorder)
        return recorder

    def save_with_metadata(
        self,
        *aggregates: LibraryAggregate,
        metadata: EventMetadata,
        **recorder_kwargs: Any,
    ) -> list[Recording[UUID]]:
        """Append every pending event of ``aggregates`` in one transaction.

        Events are immutable, so the metadata is stamped on copies; the copies
        are what is stored. ``recorder_kwargs`` reach the recorder's insert,
        which writes them in the same transaction (e.g. idempotency records).
        """
        events: list[DomainEventProtocol[UUID]] = []
        for aggregate in aggregates:
            for pending in aggregate.collect_events():
                assert isinstance(pending, BaseModel)
                events.append(pending.model_copy(update={"metadata": metadata}))
        if not events:
            return []
        return self.save(*events, **recorder_kwargs)

    def head_position(self) -> int:
        return self.recorder_.max_notification_id() or 0


def library_env(target: PostgresTarget, *, pool_size: int) -> dict[str, str]:
    """The library reads its configuration from a mapping; we build it from settings."""
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_HOST": target.host,
        "POSTGRES_PORT": str(target.port),
        "POSTGRES_USER": target.user,
        "POSTGRES_PASSWORD": target.password,
        "POSTGRES_DBNAME": target.dbname,
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(pool_size),
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "POSTGRES_LOCK_TIMEOUT": "5",
        "POSTGRES_PRE_PING": "y",
        # Tables come from our numbered migrations, never from the library.
        "CREATE_TABLE": "n",
        # Never the DB-function insert path: it skips the table lock, and tailing
        # readers could then pass over events committed out of order.
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        "IS_SNAPSHOTTING_ENABLED": "n",
    }


def open_event_store(target: PostgresTarget, *, pool_size: int) -> EventStore:
    return EventStore(env=library_env(target, pool_size=pool_size))


def positions(recordings: Sequence[Recording[UUID]]) -> list[int]:
    return [r.notification.id for r in recordings]
