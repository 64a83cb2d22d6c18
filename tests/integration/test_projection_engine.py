"""The batch runner against real PostgreSQL: exactly once, standby, stalls, rebuilds."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID, uuid4

import pytest

from aggregates.journal_entry import JournalEntry
from infra import operations
from infra.devstack.processes import wait_until
from infra.event_store import EventStore
from infra.operations import status_lines
from infra.settings import Settings
from projections import runner
from projections.base import Cursor, Fact, Projection, topic_of
from projections.entries import EntriesProjection
from projections.registry import Generation
from projections.runner import RunnerConfig
from tests.projection_support import (
    connect,
    create_team,
    live_generation,
    read_table,
    running_worker,
    wait_caught_up,
    write_entry,
)


def test_entries_are_applied_once_each_in_batches(database_url: str, store: EventStore) -> None:
    team = create_team(store)
    for n in range(23):
        write_entry(store, team.owner, f"entry {n}", tags=["Daily"])
    config = RunnerConfig(batch_size=7, poll_interval=0.2, standby_interval=0.2)
    with running_worker(database_url, store, [EntriesProjection()], config):
        generation = wait_caught_up(database_url, "entries")
        write_entry(store, team.owner, "late one")
        generation = wait_caught_up(database_url, "entries")
    rows = read_table(database_url, "entries", "created_position")
    assert [r["title"] for r in rows] == [f"entry {n}" for n in range(23)] + ["late one"]
    assert all(r["tags"] == ["daily"] and r["version"] == 1 for r in rows[:23])
    assert generation.applied_events == 24


class PoisonableEntries(EntriesProjection):
    """The entries projection with a bug switched on for entries titled "poison"."""

    bug_present = True

    def apply(self, cur: Cursor, facts: Sequence[Fact]) -> None:
        if self.bug_present and any(f.data.get("title") == "poison" for f in facts):
            raise ValueError("cannot handle poison")
        super().apply(cur, facts)


class EventCount(Projection):
    """A second projection, to show one stall does not stop the others."""

    name = "event_count"
    version = 1
    tables = ("event_count",)
    ddl = "CREATE TABLE event_count (id int PRIMARY KEY, n bigint NOT NULL);"

    @property
    def topics(self) -> frozenset[str]:
        return EntriesProjection().topics

    def apply(self, cur: Cursor, facts: Sequence[Fact]) -> None:
        cur.execute(
            "INSERT INTO event_count VALUES (1, %s) ON CONFLICT (id) "
            "DO UPDATE SET n = event_count.n + EXCLUDED.n",
            (len(facts),),
        )


class CommitModes(EventCount):
    """Records the synchronous_commit each of its batches ran with."""

    name = "commit_modes"
    tables = ("commit_modes",)
    ddl = "CREATE TABLE commit_modes (n serial PRIMARY KEY, mode text NOT NULL);"

    def apply(self, cur: Cursor, facts: Sequence[Fact]) -> None:
        cur.execute("INSERT INTO commit_modes (mode) SELECT current_setting('synchronous_commit')")


class DurableCommitModes(CommitModes):
    name = "durable_commit_modes"
    tables = ("durable_commit_modes",)
    ddl = "CREATE TABLE durable_commit_modes (n serial PRIMARY KEY, mode text NOT NULL);"
    durable_commits = True

    def apply(self, cur: Cursor, facts: Sequence[Fact]) -> None:
        cur.execute(
            "INSERT INTO durable_commit_modes (mode) SELECT current_setting('synchronous_commit')"
        )


def test_only_batches_of_a_generation_being_built_skip_the_wait_for_the_disk(
    database_url: str, settings: Settings, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No reader sees a generation being built, and its activation is durable;
    # live batches are read as soon as they commit. The audit ledger's kind
    # always waits.
    monkeypatch.setattr(
        operations, "projection_named", lambda name, **_: {"commit_modes": CommitModes(),
        "durable_commit_modes": DurableCommitModes()}.get(name),
    )  # fmt: skip
    team = create_team(store)
    write_entry(store, team.owner, "first")
    with running_worker(database_url, store, [CommitModes(), DurableCommitModes()]):
        wait_caught_up(database_url, "commit_modes")
        wait_caught_up(database_url, "durable_commit_modes")
        operations.rebuild(settings, "commit_modes")
        operations.rebuild(settings, "durable_commit_modes")
        write_entry(store, team.owner, "live")
        wait_caught_up(database_url, "commit_modes")
        wait_caught_up(database_url, "durable_commit_modes")
    modes = [r["mode"] for r in read_table(database_url, "commit_modes", "n")]
    assert modes[0] == "off"  # built
    assert modes[-1] == "on"  # live, after the switch
    durable = [r["mode"] for r in read_table(database_url, "durable_commit_modes", "n")]
    assert set(durable) == {"on"}


def _planner_rows(url: str, generation: Generation, table: str) -> float:
    """The planner's row count of a generation's table: -1 until it is analysed."""
    with connect(url) as conn:
        row = conn.execute(
            "SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)",
            (f"{generation.schema}.{table}",),
        ).fetchone()
    assert row is not None
    return float(row[0])


def test_a_generation_has_the_planners_statistics_when_it_starts_serving(
    database_url: str, settings: Settings, store: EventStore
) -> None:
    team = create_team(store)
    for n in range(30):
        write_entry(store, team.owner, f"entry {n}")
    with running_worker(database_url, store, [EntriesProjection()]):
        wait_caught_up(database_url, "entries")
        operations.rebuild(settings, "entries")
        generation = wait_caught_up(database_url, "entries")
    assert _planner_rows(database_url, generation, "entries") == 30


def test_a_first_generation_built_while_serving_is_analysed_once_caught_up(
    database_url: str, settings: Settings, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "ANALYZE_AFTER_EVENTS", 20)
    team = create_team(store)
    for n in range(30):
        write_entry(store, team.owner, f"entry {n}")
    operations.rebuild(settings, "entries")  # no generation yet: the first serves at once
    generation = live_generation(database_url, "entries")
    assert generation is not None
    assert _planner_rows(database_url, generation, "entries") == 30


def _stalled(url: str, name: str) -> Generation | None:
    found = live_generation(url, name)
    return found if found is not None and found.stalled else None


def test_a_poisoned_event_stalls_only_its_projection_until_retried(
    database_url: str, settings: Settings, store: EventStore
) -> None:
    team = create_team(store)
    write_entry(store, team.owner, "fine 1")
    poison_id = uuid4()
    write_entry(store, team.owner, "poison", id=poison_id)
    poison_at = _position_of(database_url, poison_id)
    write_entry(store, team.owner, "fine 2")
    entries = PoisonableEntries()
    with running_worker(database_url, store, [entries, EventCount()]):
        wait_until(lambda: _stalled(database_url, "entries") is not None, timeout=30, what="stall")
        stalled = _stalled(database_url, "entries")
        assert stalled is not None
        assert stalled.stalled_position == poison_at
        assert stalled.position == poison_at - 1  # the event before it is kept
        assert "cannot handle poison" in (stalled.stalled_error or "")
        assert wait_caught_up(database_url, "event_count").applied_events == 3
        assert "STALLED at" in "\n".join(status_lines(settings))

        entries.bug_present = False  # the fix is deployed
        assert "retrying" in operations.retry(settings, "entries")
        generation = wait_caught_up(database_url, "entries")
    assert generation.applied_events == 3
    titles = [r["title"] for r in read_table(database_url, "entries", "created_position")]
    assert titles == ["fine 1", "poison", "fine 2"]


def _position_of(url: str, aggregate_id: UUID) -> int:
    with connect(url) as conn:
        row = conn.execute(
            "SELECT notification_id FROM chronik_events WHERE originator_id = %s "
            "AND originator_version = 1",
            (aggregate_id,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _insert_undecodable_event(url: str, aggregate_id: UUID) -> int:
    with connect(url) as conn:
        row = conn.execute(
            "INSERT INTO chronik_events (originator_id, originator_version, topic, state) "
            "VALUES (%s, 2, %s, %s) RETURNING notification_id",
            (aggregate_id, topic_of(JournalEntry, "Edited"), b'{"not": "an edit"}'),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_skipping_needs_the_exact_stalled_position_and_is_logged(
    database_url: str, settings: Settings, store: EventStore
) -> None:
    team = create_team(store)
    entry_id = uuid4()
    write_entry(store, team.owner, "before", id=entry_id)
    bad_at = _insert_undecodable_event(database_url, entry_id)
    write_entry(store, team.owner, "after")
    with running_worker(database_url, store, [EntriesProjection()]):
        wait_until(lambda: _stalled(database_url, "entries") is not None, timeout=30, what="stall")
        with pytest.raises(operations.OperationError, match="not stalled at position"):
            operations.skip(settings, "entries", bad_at + 1, "wrong place")
        operations.skip(settings, "entries", bad_at, "corrupt test event")
        generation = wait_caught_up(database_url, "entries")
    assert not generation.stalled
    assert generation.applied_events == 2  # the skipped event was never applied
    with connect(database_url) as conn:
        logged = conn.execute(
            "SELECT action, position, detail FROM projection_log WHERE action = 'skip'"
        ).fetchall()
    assert logged == [("skip", bad_at, "corrupt test event")]


def test_a_standby_takes_over_when_the_active_runner_goes(
    database_url: str, store: EventStore
) -> None:
    team = create_team(store)
    write_entry(store, team.owner, "one")
    with running_worker(database_url, store, [EntriesProjection()]) as first:
        wait_caught_up(database_url, "entries")
        with running_worker(database_url, store, [EntriesProjection()]) as second:
            wait_until(lambda: bool(second.runners), timeout=10, what="standby runner")
            active = [r for w in (first, second) for r in w.runners.values() if r.active.is_set()]
            assert len(active) == 1
            assert active[0] in first.runners.values()
            first.stop()  # its connections close, and with them its lock
            write_entry(store, team.owner, "two")
            generation = wait_caught_up(database_url, "entries", timeout=15)
            assert any(r.active.is_set() for r in second.runners.values())
    assert generation.applied_events == 2


class EntriesV2(EntriesProjection):
    version = 2


def _schemas(url: str) -> set[str]:
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'chronik_proj_%'"
        ).fetchall()
    return {r[0] for r in rows}


def test_new_projection_code_builds_a_new_generation_and_switches_to_it(
    database_url: str, store: EventStore
) -> None:
    team = create_team(store)
    for n in range(40):
        write_entry(store, team.owner, f"entry {n}")
    with running_worker(database_url, store, [EntriesProjection()]):
        old = wait_caught_up(database_url, "entries")
    before = read_table(database_url, "entries", "id")
    with running_worker(database_url, store, [EntriesV2()]):
        wait_until(
            lambda: (g := live_generation(database_url, "entries")) is not None and g.version == 2,
            timeout=30,
            what="version 2 serving reads",
        )
        new = wait_caught_up(database_url, "entries")
        wait_until(lambda: old.schema not in _schemas(database_url), timeout=10, what="old drop")
    assert new.id != old.id
    assert read_table(database_url, "entries", "id") == before
    assert _schemas(database_url) == {new.schema}


def test_rebuild_switches_readers_to_an_identical_new_generation(
    database_url: str, settings: Settings, store: EventStore
) -> None:
    team = create_team(store)
    for n in range(120):
        write_entry(store, team.owner, f"entry {n}", tags=[f"t{n % 7}"])
    with running_worker(database_url, store, [EntriesProjection()]):
        old = wait_caught_up(database_url, "entries")
        before = read_table(database_url, "entries", "id")
        message = operations.rebuild(settings, "entries", batch_size=25)
        new = wait_caught_up(database_url, "entries")
        assert new.id != old.id
        assert f"generation {new.id} now serves reads" in message
        write_entry(store, team.owner, "after the switch")
        wait_caught_up(database_url, "entries")  # the worker took over the new generation
    after = read_table(database_url, "entries", "id")
    assert [r for r in after if r["title"] != "after the switch"] == before
    assert len(after) == 121
    with connect(database_url) as conn:
        actions = [r[0] for r in conn.execute("SELECT action FROM projection_log ORDER BY id")]
    assert actions == ["create", "create", "retire", "activate"]
