"""Wires the projection engine to the event store and the database."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError
from psycopg_pool import PoolTimeout

from aggregates.base import DomainEvent
from infra.db import PostgresTarget
from infra.event_store import EVENTS_TABLE, EventStore
from infra.serialization import PydanticMapper
from infra.settings import Settings
from projections.audit_chain import CheckpointSigner
from projections.base import LoggedEvent, Projection
from projections.catalog import all_projections
from projections.runner import Connect, RunnerConfig, SourceUnavailable
from projections.wakeups import CONTROL_CHANNEL, Wakeups
from projections.worker import ProjectionWorker

__all__ = [
    "StoredEventSource",
    "checkpoint_signer",
    "connector",
    "open_projection_worker",
    "projections_for",
    "runner_config",
]


class StoredEventSource:
    """The library's notification log, read by position, decoded by our mapper."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        mapper = store.mapper
        assert isinstance(mapper, PydanticMapper)
        self._mapper = mapper

    def read(self, after: int, limit: int) -> Sequence[LoggedEvent]:
        try:
            found: Sequence[LoggedEvent] = self._store.read_log(after, limit)
        except (OperationalError, InterfaceError, PoolTimeout) as exc:
            raise SourceUnavailable(str(exc)) from exc
        return found

    def decode(self, notification: LoggedEvent) -> DomainEvent:
        event = self._mapper.decode(notification.topic, notification.state)
        assert isinstance(event, DomainEvent)
        return event


def connector(target: PostgresTarget, *, name: str) -> Connect:
    """Dedicated connections (a runner's holds its advisory lock for its life)."""
    conninfo = target.conninfo()

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(conninfo, autocommit=True, application_name=name)

    return connect


def runner_config(settings: Settings, *, batch_size: int | None = None) -> RunnerConfig:
    return RunnerConfig(
        batch_size=batch_size or settings.projection_batch_size,
        poll_interval=settings.projection_poll_interval,
    )


def checkpoint_signer(settings: Settings) -> CheckpointSigner | None:
    keys = settings.audit_signing_keys
    if not keys:
        return None
    return CheckpointSigner({k: v.get_secret_value().encode() for k, v in keys.items()})


def projections_for(settings: Settings) -> list[Projection]:
    """Every projection, the audit ledger signing with the configured keys."""
    return all_projections(
        signer=checkpoint_signer(settings), checkpoint_every=settings.audit_checkpoint_every
    )


def open_projection_worker(
    settings: Settings, store: EventStore, projections: Sequence[Projection]
) -> ProjectionWorker:
    target = PostgresTarget.from_url(settings.database_url_value())
    connect = connector(target, name="chronik-projections")
    wakeups = Wakeups(connect, [EVENTS_TABLE, CONTROL_CHANNEL])
    return ProjectionWorker(
        projections,
        connect=connect,
        source=StoredEventSource(store),
        config=runner_config(settings),
        wakeups=wakeups,
    )
