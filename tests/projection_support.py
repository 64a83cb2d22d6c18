"""Helpers for tests that run projections against a real database."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from aggregates.base import Actor, Role
from commands import entries, teams
from commands.context import CommandContext
from commands.models import CreateEntry, CreateTeam
from infra.db import PostgresTarget
from infra.devstack.processes import wait_until
from infra.event_store import EventStore, head_position
from infra.fanout import Fanout
from infra.projection_wiring import StoredEventSource, connector
from infra.settings import Settings
from projections import registry
from projections.base import Projection
from projections.runner import RunnerConfig
from projections.wakeups import CONTROL_CHANNEL, Wakeups
from projections.worker import ProjectionWorker


@dataclass(frozen=True)
class TeamFixture:
    team_id: UUID
    owner: Actor
    owner_key: str


def create_team(store: EventStore, name: str = "Team") -> TeamFixture:
    created = teams.create_team(
        store, CreateTeam(name=name, plan="enterprise", owner_email="owner@example.com")
    )
    team_id = UUID(created.result.data["id"])
    owner_id = UUID(created.result.data["owner_user_id"])
    return TeamFixture(team_id, Actor(owner_id, Role.OWNER, team_id), created.owner_key)


def write_entry(store: EventStore, actor: Actor, title: str, **fields: Any) -> int:
    result = entries.create_entry(
        store, CommandContext(actor=actor), CreateEntry(title=title, **fields)
    )
    return result.position


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def live_generation(url: str, name: str) -> registry.Generation | None:
    with connect(url) as conn:
        return next((g for g in registry.generations(conn, name) if g.state == "active"), None)


def head(url: str) -> int:
    with connect(url) as conn:
        return head_position(conn)


def wait_caught_up(url: str, name: str, *, timeout: float = 30.0) -> registry.Generation:
    target = head(url)

    def caught_up() -> bool:
        found = live_generation(url, name)
        return found is not None and found.position >= target

    wait_until(caught_up, timeout=timeout, what=f"{name} reaching position {target}")
    found = live_generation(url, name)
    assert found is not None
    return found


def read_table(url: str, table: str, order_by: str) -> list[dict[str, Any]]:
    with connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        query = sql.SQL("SELECT * FROM {} ORDER BY {}").format(
            sql.Identifier("reads", table), sql.Identifier(order_by)
        )
        return cur.execute(query).fetchall()


@contextmanager
def running_worker(
    url: str,
    store: EventStore,
    projections: Sequence[Projection],
    config: RunnerConfig | None = None,
) -> Iterator[ProjectionWorker]:
    connect_ = connector(PostgresTarget.from_url(url), name="test-projections")
    worker = ProjectionWorker(
        projections,
        connect=connect_,
        source=StoredEventSource(store),
        config=config or RunnerConfig(batch_size=50, poll_interval=0.2, standby_interval=0.2),
        wakeups=Wakeups(connect_, ["chronik_events", CONTROL_CHANNEL]),
    )
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def notify_control(url: str) -> None:
    with connect(url) as conn:
        conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(CONTROL_CHANNEL)))


__all__ = [
    "TeamFixture",
    "create_team",
    "head",
    "live_generation",
    "notify_control",
    "read_table",
    "running_worker",
    "seed_entries",
    "wait_caught_up",
    "write_entry",
]


def seed_entries(store: EventStore, actor: Actor, count: int, *, per_save: int = 1000) -> None:
    """``count`` entries written straight through the event store, many per
    transaction: a large log quickly (the quota is not what these tests are about)."""
    from aggregates.base import EventMetadata
    from aggregates.journal_entry import JournalEntry

    metadata = EventMetadata(team_id=actor.team_id, actor_user_id=actor.user_id)
    for start in range(0, count, per_save):
        batch = [
            JournalEntry.create(actor, id=uuid4(), title=f"seeded {n}", body="x" * 200, tags=["s"])
            for n in range(start, min(start + per_save, count))
        ]
        store.save(batch, metadata=metadata)


@contextmanager
def running_fanout(settings: Settings, store: EventStore, **parts: bool) -> Iterator[Fanout]:
    """The relay, the webhook consumer and the delivery worker (or the ``parts``
    set), as `chronik worker` runs them."""
    service = Fanout(settings, store, **parts)
    service.start()
    try:
        yield service
    finally:
        service.stop()
