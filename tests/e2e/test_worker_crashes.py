"""The worker killed with SIGKILL at random moments while commands stream in:
every read table still equals a from-scratch rebuild, and no event was applied
twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID, uuid4

from psycopg import sql
from psycopg.rows import dict_row

from aggregates.base import Actor, Role
from commands import entries, prompts, teams
from commands.context import CommandContext
from commands.models import AddMember, ChangeRole, CreateEntry, CreatePrompt, EditEntry, EditPrompt
from infra import operations
from infra.db import PostgresTarget
from infra.event_store import EventStore, open_event_store
from infra.settings import Settings
from projections.audit_ledger import LedgerProjection
from projections.base import Projection
from projections.catalog import all_projections
from tests.projection_support import connect, create_team, wait_caught_up

COMMANDS = 20_000
KILLS = 10
WRITERS = 4


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CHRONIK_DATABASE_URL": settings.database_url_value(),
        # The worker's relay publishes: to this test's own stream.
        "CHRONIK_NATS_NAMESPACE": settings.nats_namespace,
        "CHRONIK_PROJECTION_POLL_INTERVAL": "0.2",
        "CHRONIK_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "worker"], env=env, stdout=subprocess.DEVNULL
    )


@contextmanager
def _worker_process(settings: Settings) -> Iterator[list[subprocess.Popen[bytes]]]:
    current = [_start_worker(settings)]
    try:
        yield current
    finally:
        current[0].send_signal(signal.SIGTERM)
        current[0].wait(timeout=30)


class _Writer:
    """A random mix of commands on one team: entries mostly, and members and
    prompts, so every projection sees creates, changes and removals."""

    def __init__(self, store: EventStore, actor: Actor, seed: int) -> None:
        self.store = store
        self.ctx = CommandContext(actor=actor)
        self.rng = random.Random(seed)
        self.live: list[UUID] = []
        self.deleted: list[UUID] = []
        self.members: list[UUID] = []
        self.prompts: list[UUID] = []

    def run(self, count: int) -> None:
        for n in range(count):
            roll = self.rng.random()
            if roll < 0.08:
                self._team_or_prompt(n, self.rng.random())
            else:
                self._entry(n, self.rng.random())

    def _entry(self, n: int, roll: float) -> None:
        store, ctx, rng = self.store, self.ctx, self.rng
        if roll < 0.55 or not self.live:
            entry_id = uuid4()
            tags = [f"t{rng.randrange(5)}"]
            entries.create_entry(store, ctx, CreateEntry(id=entry_id, title=f"e{n}", tags=tags))
            self.live.append(entry_id)
        elif roll < 0.8:
            entries.edit_entry(store, ctx, rng.choice(self.live), EditEntry(body=f"body {n}"))
        elif roll < 0.9:
            visibility = rng.choice(["team", "private"])
            entries.edit_entry(store, ctx, rng.choice(self.live), EditEntry(visibility=visibility))
        elif roll < 0.95 or not self.deleted:
            victim = self.live.pop(rng.randrange(len(self.live)))
            entries.delete_entry(store, ctx, victim)
            self.deleted.append(victim)
        else:
            back = self.deleted.pop(rng.randrange(len(self.deleted)))
            entries.restore_entry(store, ctx, back)
            self.live.append(back)

    def _team_or_prompt(self, n: int, roll: float) -> None:
        store, ctx, rng = self.store, self.ctx, self.rng
        if roll < 0.35 or not self.members:
            added = teams.add_member(
                store, ctx, AddMember(email=f"m{n}@example.com", display_name=f"M {n}")
            )
            self.members.append(UUID(added.data["user_id"]))
        elif roll < 0.5:
            role = rng.choice([Role.ADMIN, Role.MEMBER, Role.AUDITOR])
            teams.change_role(store, ctx, rng.choice(self.members), ChangeRole(role=role))
        elif roll < 0.6:
            gone = self.members.pop(rng.randrange(len(self.members)))
            teams.remove_member(store, ctx, gone)
        elif roll < 0.85 or not self.prompts:
            prompt_id = uuid4()
            prompts.create_prompt(store, ctx, CreatePrompt(id=prompt_id, text=f"prompt {n}"))
            self.prompts.append(prompt_id)
        else:
            prompt_id = rng.choice(self.prompts)
            prompts.edit_prompt(store, ctx, prompt_id, EditPrompt(text=f"edited {n}"))


def _write(store: EventStore, actor: Actor, count: int, seed: int) -> None:
    _Writer(store, actor, seed).run(count)


def _rows(url: str, projection: Projection) -> dict[str, list[dict[str, Any]]]:
    tables: dict[str, list[dict[str, Any]]] = {}
    with connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        for table in projection.tables:
            query = sql.SQL("SELECT * FROM {}").format(sql.Identifier("reads", table))
            # Every column decides the order: no table's key is in its first columns.
            tables[table] = sorted(cur.execute(query).fetchall(), key=repr)
    return tables


def _events_for(url: str, projection: Projection, up_to: int) -> int:
    # The audit ledger chains every event, whatever its topic.
    topics = None if isinstance(projection, LedgerProjection) else list(projection.topics)
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM chronik_events WHERE (%s::text[] IS NULL OR topic = ANY(%s))"
            " AND notification_id <= %s",
            (topics, topics, up_to),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_sigkilled_workers_apply_every_event_exactly_once(settings: Settings) -> None:
    url = settings.database_url_value()
    store = open_event_store(PostgresTarget.from_url(url), pool_size=WRITERS + 2)
    actors = [create_team(store, f"team {n}").owner for n in range(WRITERS)]
    rng = random.Random(20261125)
    with _worker_process(settings) as worker:
        writers = [
            threading.Thread(target=_write, args=(store, actor, COMMANDS // WRITERS, seed))
            for seed, actor in enumerate(actors)
        ]
        for thread in writers:
            thread.start()
        for _ in range(KILLS):
            # Random moments, spread over the stream (not a sleep to synchronise).
            time.sleep(rng.uniform(0.5, 3.0))
            worker[0].kill()
            worker[0].wait(timeout=10)
            worker[0] = _start_worker(settings)
        for thread in writers:
            thread.join()
        caught_up = {p.name: wait_caught_up(url, p.name, timeout=120) for p in all_projections()}
    store.close()
    for projection in all_projections():
        generation = caught_up[projection.name]
        assert generation.applied_events == _events_for(url, projection, generation.position)
        before = _rows(url, projection)
        operations.rebuild(settings, projection.name)
        assert _rows(url, projection) == before, projection.name


def test_a_standby_worker_process_takes_over_from_a_killed_one(settings: Settings) -> None:
    url = settings.database_url_value()
    store = open_event_store(PostgresTarget.from_url(url), pool_size=2)
    team = create_team(store)
    with _worker_process(settings) as first:
        for projection in all_projections():
            wait_caught_up(url, projection.name)  # the first worker holds every lock
        with _worker_process(settings):
            first[0].kill()
            first[0].wait(timeout=10)
            entries.create_entry(store, CommandContext(actor=team.owner), CreateEntry(title="x"))
            # The standby is a fresh process: its start-up is inside this bound.
            generation = wait_caught_up(url, "entries", timeout=60)
            first[0] = _start_worker(settings)  # so the outer block has one to stop
    store.close()
    assert generation.applied_events == 1
