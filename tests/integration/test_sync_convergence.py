"""Convergence, the sync contract: for any history and any member, a client
that pulls incrementally from any cursor ends with exactly what a fresh full
sync gives, and never receives content outside its scope."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregates.base import Actor, DomainError, Role
from commands import entries, teams
from commands.context import CommandContext
from commands.models import AddMember, CreateEntry, EditEntry
from infra.db import PostgresTarget
from infra.devstack.processes import wait_until
from infra.event_store import EventStore
from infra.jobs import compact_sync_once
from infra.projection_wiring import StoredEventSource, connector
from infra.settings import Settings
from projections import registry
from projections.runner import GenerationRunner, RunnerConfig
from projections.sync import CursorExpired, SyncPage, SyncProjection, pull
from tests.projection_support import connect, create_team


@dataclass
class Client:
    user_id: UUID
    cursor: str | None = None
    held: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    leaks: list[str] = field(default_factory=list)

    def take(self, page: SyncPage) -> None:
        for change in page.changes:
            key = (change["entity"], change["id"])
            if change["op"] == "delete":
                assert change["data"] is None
                self.held.pop(key, None)
                continue
            data = change["data"]
            private = change["entity"] == "entry" and data["visibility"] == "private"
            if private and data["author_id"] != str(self.user_id):
                self.leaks.append(change["id"])
            self.held[key] = data
        self.cursor = page.cursor


class World:
    def __init__(self, url: str, store: EventStore) -> None:
        self.url = url
        self.store = store
        team = create_team(store)
        self.team_id = team.team_id
        self.owner = team.owner
        self.members = [self.owner]
        for n in range(2):
            added = teams.add_member(
                store,
                CommandContext(actor=self.owner),
                AddMember(email=f"m{n}@example.com", display_name=f"M{n}", role=Role.MEMBER),
            )
            self.members.append(Actor(UUID(added.data["user_id"]), Role.MEMBER, self.team_id))
        self.removed: set[UUID] = set()
        self.entries: list[tuple[UUID, Actor]] = []
        self.clients = {m.user_id: Client(m.user_id) for m in self.members}

    def run(self, op: str, a: int, b: int) -> None:
        actor = self.members[a % len(self.members)]
        if actor.user_id in self.removed and op != "pull":
            return
        # Refused commands append nothing; that is part of any history too.
        with contextlib.suppress(DomainError):
            self._command(op, CommandContext(actor=actor), actor, b)

    def _command(self, op: str, ctx: CommandContext, actor: Actor, b: int) -> None:
        if op == "create":
            entry_id = uuid4()
            visibility = "private" if b % 2 else "team"
            entries.create_entry(
                self.store, ctx, CreateEntry(id=entry_id, title=f"t{b}", visibility=visibility)
            )
            self.entries.append((entry_id, actor))
            return
        if op == "pull":
            client = self.clients[actor.user_id]
            if actor.user_id not in self.removed:
                catch_up(self.url, self.store)
                client.take(self.pull(client.user_id, client.cursor, 1 + b % 4))
            return
        if op == "remove" and actor.role is not Role.OWNER:
            teams.remove_member(self.store, CommandContext(actor=self.owner), actor.user_id)
            self.removed.add(actor.user_id)
            return
        if not self.entries:
            return
        entry_id, author = self.entries[b % len(self.entries)]
        if author.user_id in self.removed:
            return
        author_ctx = CommandContext(actor=author)
        match op:
            case "edit":
                entries.edit_entry(self.store, author_ctx, entry_id, EditEntry(body=f"b{b}"))
            case "visibility":
                visibility = "team" if b % 2 else "private"
                entries.edit_entry(
                    self.store, author_ctx, entry_id, EditEntry(visibility=visibility)
                )
            case "delete":
                entries.delete_entry(self.store, author_ctx, entry_id)
            case "restore":
                entries.restore_entry(self.store, author_ctx, entry_id)

    def pull(self, user_id: UUID, cursor: str | None, limit: int) -> SyncPage:
        with connect(self.url) as conn:
            return pull(conn, self.team_id, user_id, cursor, limit)

    def full_sync(self, user_id: UUID) -> Client:
        fresh = Client(user_id)
        self.drain(fresh)
        return fresh

    def drain(self, client: Client) -> None:
        while True:
            page = self.pull(client.user_id, client.cursor, 7)
            client.take(page)
            if not page.has_more:
                return


def catch_up(url: str, store: EventStore) -> None:
    """Apply the log to the sync projection now, in this thread."""
    projection = SyncProjection()
    with connect(url) as conn:
        generation = registry.create_generation(conn, projection)
    GenerationRunner(
        projection,
        generation.id,
        connect=connector(PostgresTarget.from_url(url), name="test-sync"),
        source=StoredEventSource(store),
        config=RunnerConfig(batch_size=5),
        wake=threading.Event(),
        stopping=threading.Event(),
        until_caught_up=True,
    ).run()


OPS = st.sampled_from(
    ["create", "create", "edit", "visibility", "visibility", "delete", "restore", "remove"]
    + ["pull"] * 4
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=st.lists(st.tuples(OPS, st.integers(0, 5), st.integers(0, 50)), max_size=40))
def test_every_member_converges_to_a_full_sync_and_sees_only_their_scope(
    database_url: str, store: EventStore, history: list[tuple[str, int, int]]
) -> None:
    world = World(database_url, store)
    for op, a, b in history:
        world.run(op, a, b)
    catch_up(database_url, store)
    for member in world.members:
        if member.user_id in world.removed:
            continue
        client = world.clients[member.user_id]
        world.drain(client)
        assert client.held == world.full_sync(member.user_id).held
        assert client.leaks == []
    # A removed member's private entries reach nobody else.
    for client in world.clients.values():
        assert client.leaks == []


def test_cursors_older_than_the_purged_tombstones_expire(
    database_url: str, store: EventStore, settings: Settings
) -> None:
    world = World(database_url, store)
    world.run("create", 0, 0)
    catch_up(database_url, store)
    old = world.full_sync(world.owner.user_id)
    world.run("delete", 0, 0)
    catch_up(database_url, store)
    # A retention of a few milliseconds: the tombstone is past it at once.
    hasty = settings.model_copy(update={"sync_tombstone_retention_days": 1e-7})

    def horizon() -> int:
        with connect(database_url) as conn:
            row = conn.execute("SELECT position FROM reads.sync_horizon").fetchone()
        return int(row[0]) if row else 0

    def purged() -> bool:
        compact_sync_once(hasty)
        return horizon() > 0

    wait_until(purged, timeout=10, what="the tombstone purge")
    with pytest.raises(CursorExpired):
        world.pull(world.owner.user_id, old.cursor, 10)
    fresh = world.full_sync(world.owner.user_id)  # the reset path works
    assert ("entry", str(world.entries[0][0])) not in fresh.held
    assert world.pull(world.owner.user_id, fresh.cursor, 10).changes == []
