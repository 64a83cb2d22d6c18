"""Team snapshots, and events stored in an older shape, on real PostgreSQL.

A snapshot is only a shortcut: whatever is loaded from one must equal what
replaying every event gives, at every version.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar
from uuid import UUID, uuid4

import psycopg
import pytest
import structlog.testing
from eventsourcing.application import Repository
from eventsourcing.domain import MutableOrImmutableAggregate
from eventsourcing.postgres import PostgresFactory
from eventsourcing.utils import Environment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregates.base import Actor, DomainError, EventMetadata, Role
from aggregates.journal_entry import JournalEntry
from aggregates.quota import MonthlyQuota
from aggregates.team import Team
from infra.db import PostgresTarget
from infra.event_store import (
    APPLICATION_NAME,
    SNAPSHOTS_TABLE,
    TEAM_SNAPSHOT_INTERVAL,
    EventStore,
    library_env,
)

SELECT_SNAPSHOT_VERSIONS = """
SELECT originator_version FROM chronik_snapshots WHERE originator_id = %s
ORDER BY originator_version
"""
SELECT_COLUMNS = """
SELECT column_name, data_type, is_nullable FROM information_schema.columns
WHERE table_name = %s ORDER BY ordinal_position
"""
SELECT_PRIMARY_KEY = """
SELECT a.attname FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY a.attnum
"""
SELECT_RELOPTIONS = "SELECT reloptions FROM pg_class WHERE relname = %s"
INSERT_STORED_EVENT = """
INSERT INTO chronik_events (originator_id, originator_version, topic, state)
VALUES (%s, %s, %s, %s)
"""
SELECT_STORED_STATE = """
SELECT state FROM chronik_events WHERE originator_id = %s AND originator_version = %s
"""
# A real refusal by the database (as a full disk or a lost grant would be);
# NOT VALID: rows already there are not checked, new ones are.
REFUSE_SNAPSHOTS = "ALTER TABLE chronik_snapshots ADD CONSTRAINT refused CHECK (false) NOT VALID"

SMALL_INTERVAL = 3


class SmallIntervalStore(EventStore):
    """The real store with a short interval, so short histories cross many."""

    # Else the library names the application, and so its tables, after the class.
    name = APPLICATION_NAME
    snapshotting_intervals: ClassVar[dict[type[MutableOrImmutableAggregate[Any]], int]] = {
        Team: SMALL_INTERVAL
    }


@pytest.fixture
def small_store(database_url: str) -> Iterator[EventStore]:
    env = library_env(PostgresTarget.from_url(database_url), pool_size=4)
    store = SmallIntervalStore(env=env)
    yield store
    store.close()


def _state(aggregate: object) -> dict[str, Any]:
    return {k: v for k, v in vars(aggregate).items() if k != "_pending_events"}


def _replayed(store: EventStore, team_id: UUID, version: int | None = None) -> Team:
    """Every event from the first: a repository that has no snapshot store."""
    team: object = Repository(store.events).get(team_id, version=version)
    assert isinstance(team, Team)
    return team


def _from_snapshots(store: EventStore, team_id: UUID, version: int | None = None) -> Team:
    """No cache in the way: the newest snapshot at or before ``version``, then events."""
    assert store.snapshots is not None
    repository = Repository(store.events, snapshot_store=store.snapshots)
    team: object = repository.get(team_id, version=version)
    assert isinstance(team, Team)
    return team


def _loaded(store: EventStore, team_id: UUID, version: int) -> Team:
    """What the audit routes get: the store's own repository, at a version."""
    team: object = store.repository.get(team_id, version=version)
    assert isinstance(team, Team)
    return team


def _snapshot_versions(database_url: str, team_id: UUID) -> list[int]:
    with psycopg.connect(PostgresTarget.from_url(database_url).conninfo()) as conn:
        return [row[0] for row in conn.execute(SELECT_SNAPSHOT_VERSIONS, (team_id,))]


class TeamHistory:
    """A team changed by its owner, saved through the store as commands save."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.owner = Actor(uuid4(), Role.OWNER, uuid4())
        self.team = Team.create(
            id=self.owner.team_id, name="Acme", plan="team", owner_user_id=self.owner.user_id,
            owner_email="owner@example.com", owner_display_name="Owner",
        )  # fmt: skip
        self.users: dict[int, UUID] = {}

    def user(self, n: int) -> UUID:
        return self.users.setdefault(n, uuid4())

    def apply(self, op: tuple[Any, ...]) -> None:
        """One command; one the domain refuses (a duplicate, an unknown key) is skipped."""
        team, owner = self.team, self.owner
        try:
            match op:
                case ("add", int(n), Role() as role):
                    team.add_member(
                        owner, user_id=self.user(n), email=f"u{n}@example.com",
                        display_name=f"User {n}", role=role,
                    )  # fmt: skip
                case ("remove", int(n)):
                    team.remove_member(owner, self.user(n))
                case ("role", int(n), Role() as role):
                    team.change_role(owner, self.user(n), role)
                case ("issue", int(n), int(k)):
                    team.issue_api_key(
                        owner, key_id=f"key-{k}", user_id=self.user(n), name=f"key {k}",
                        secret_hash=f"scrypt-{k}",
                    )  # fmt: skip
                case ("revoke", int(k)):
                    team.revoke_api_key(owner, f"key-{k}")
                case ("rename", str(name)):
                    team.rename(owner, name)
                case ("save",):
                    self.save()
                case _:
                    raise AssertionError(op)
        except DomainError:
            pass

    def save(self) -> list[int]:
        metadata = EventMetadata(team_id=self.team.id, command="Test")
        return self.store.save([self.team], metadata=metadata)


def _busy_history(history: TeamHistory, until_version: int) -> None:
    """Members come and go, keys are issued and revoked, roles change; saved
    in batches of uneven size, so some batches cross a multiple of the interval."""
    n = 0
    while history.team.version < until_version:
        n += 1
        role = (Role.ADMIN, Role.MEMBER, Role.AUDITOR)[n % 3]
        for op in [
            ("add", n, role),
            ("issue", n, 2 * n),
            ("issue", n, 2 * n + 1),
            ("role", n, Role.MEMBER if role is not Role.MEMBER else Role.ADMIN),
            ("revoke", 2 * n),
            ("remove", n - 1) if n % 4 == 0 else ("rename", f"Acme {n}"),
        ]:
            history.apply(op)
        if n % 2:
            history.save()
    history.save()


def test_a_long_lived_team_loads_the_same_with_and_without_snapshots_at_every_version(
    store: EventStore, database_url: str
) -> None:
    history = TeamHistory(store)
    _busy_history(history, until_version=2 * TEAM_SNAPSHOT_INTERVAL + 17)
    team_id, last = history.team.id, history.team.version
    assert last > 2 * TEAM_SNAPSHOT_INTERVAL

    assert _snapshot_versions(database_url, team_id) == [
        TEAM_SNAPSHOT_INTERVAL,
        2 * TEAM_SNAPSHOT_INTERVAL,
    ]
    for version in range(1, last + 1):
        expected = _state(_replayed(store, team_id, version))
        assert _state(_loaded(store, team_id, version)) == expected, version
    assert _state(_from_snapshots(store, team_id)) == _state(_replayed(store, team_id))
    assert _state(_replayed(store, team_id)) == _state(history.team)
    loaded = store.get(team_id, Team)
    assert loaded is not None
    assert _state(loaded) == _state(history.team)


def test_a_load_starts_from_the_newest_snapshot_at_or_before_the_version(
    store: EventStore,
) -> None:
    """Doctored snapshots (a name no event ever set) show which one a load used."""
    history = TeamHistory(store)
    for n in range(4):
        history.apply(("add", n, Role.MEMBER))
        history.apply(("issue", n, n))
    history.save()
    assert history.team.version == 9
    assert store.snapshots is not None
    for version, name in [(3, "from snapshot 3"), (6, "from snapshot 6")]:
        honest = Team.Snapshot.take(_loaded(store, history.team.id, version))
        doctored = honest.state.model_copy(update={"name": name})
        store.snapshots.put([honest.model_copy(update={"state": doctored})])

    names = [_loaded(store, history.team.id, v).name for v in range(1, 10)]
    assert names == ["Acme"] * 2 + ["from snapshot 3"] * 3 + ["from snapshot 6"] * 4
    assert _from_snapshots(store, history.team.id).name == "from snapshot 6"
    # What was replayed on top of the snapshot is still there.
    assert len(_from_snapshots(store, history.team.id).members) == 5


@pytest.mark.parametrize("failure", ["database refuses", "taking it raises"])
def test_a_snapshot_that_fails_never_fails_the_command(
    small_store: EventStore,
    database_url: str,
    failure: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if failure == "database refuses":
        with psycopg.connect(PostgresTarget.from_url(database_url).conninfo()) as conn:
            conn.execute(REFUSE_SNAPSHOTS)
    else:

        def broken(cls: type[Team.Snapshot], aggregate: Team) -> Team.Snapshot:
            raise RuntimeError("snapshot bug")

        monkeypatch.setattr(Team.Snapshot, "take", classmethod(broken))
    history = TeamHistory(small_store)
    history.apply(("add", 1, Role.MEMBER))
    history.apply(("rename", "Acme 2"))
    with structlog.testing.capture_logs() as logs:
        positions = history.save()

    assert len(positions) == SMALL_INTERVAL
    assert _snapshot_versions(database_url, history.team.id) == []
    assert [log["event"] for log in logs if log["log_level"] == "warning"] == [
        "snapshot failed; loads replay more events until the next one"
    ]
    assert _state(_from_snapshots(small_store, history.team.id)) == _state(history.team)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(0, 5), st.sampled_from(list(Role))),
            st.tuples(st.just("remove"), st.integers(0, 5)),
            st.tuples(st.just("role"), st.integers(0, 5), st.sampled_from(list(Role))),
            st.tuples(st.just("issue"), st.integers(0, 5), st.integers(0, 9)),
            st.tuples(st.just("revoke"), st.integers(0, 9)),
            st.tuples(st.just("rename"), st.sampled_from(["Acme", "Beta", "Gamma"])),
            st.just(("save",)),
        ),
        max_size=40,
    )
)
def test_any_team_history_loads_the_same_with_and_without_snapshots(
    small_store: EventStore, database_url: str, ops: list[tuple[Any, ...]]
) -> None:
    history = TeamHistory(small_store)
    for op in ops:
        history.apply(op)
    history.save()
    team_id, last = history.team.id, history.team.version

    expected_snapshots = list(range(SMALL_INTERVAL, last + 1, SMALL_INTERVAL))
    assert _snapshot_versions(database_url, team_id) == expected_snapshots
    for version in range(1, last + 1):
        expected = _state(_replayed(small_store, team_id, version))
        assert _state(_loaded(small_store, team_id, version)) == expected
    assert _state(_from_snapshots(small_store, team_id)) == _state(history.team)


def test_the_snapshots_table_is_the_one_the_library_would_make(
    database_url: str, empty_database_url: str
) -> None:
    """0005 by hand, compared with the library's own CREATE TABLE in an empty database."""
    target = PostgresTarget.from_url(empty_database_url)
    env = {**library_env(target, pool_size=1), "CREATE_TABLE": "y"}
    factory = PostgresFactory(Environment(APPLICATION_NAME, env))
    try:
        factory.aggregate_recorder(purpose="snapshots")
    finally:
        factory.close()

    def shape(url: str) -> tuple[object, ...]:
        with psycopg.connect(PostgresTarget.from_url(url).conninfo()) as conn:
            return (
                conn.execute(SELECT_COLUMNS, (SNAPSHOTS_TABLE,)).fetchall(),
                conn.execute(SELECT_PRIMARY_KEY, (SNAPSHOTS_TABLE,)).fetchall(),
                conn.execute(SELECT_RELOPTIONS, (SNAPSHOTS_TABLE,)).fetchall(),
            )

    ours, theirs = shape(database_url), shape(empty_database_url)
    assert ours[0]
    assert ours == theirs


def test_a_threshold_event_stored_before_it_had_a_month_still_loads(
    store: EventStore, database_url: str
) -> None:
    """Version 1 bytes written as the old code wrote them, stamped just after the
    month it counts for ended; read back with the month, and never rewritten."""
    team_id = uuid4()
    quota = MonthlyQuota.start(team_id, "2025-03")
    for _ in range(8):
        quota.reserve(uuid4(), limit=10)
    store.events.put(quota.collect_events())
    quota_id, version = quota.id, quota.version + 1
    old = (
        f'{{"originator_id":"{quota_id}","originator_version":{version},'
        f'"timestamp":"2025-04-01T00:00:00.000200+00:00",'
        f'"metadata":{{"team_id":"{team_id}","command":"CreateEntry"}},'
        '"threshold_percent":90,"used":9,"limit":10}'
    ).encode()
    topic = "aggregates.quota:MonthlyQuota.ThresholdReached"
    with psycopg.connect(PostgresTarget.from_url(database_url).conninfo()) as conn:
        conn.execute(INSERT_STORED_EVENT, (quota_id, version, topic, old))

    loaded = store.get(quota_id, MonthlyQuota)
    assert loaded is not None
    assert loaded.threshold_reached
    [stored] = store.events.recorder.select_events(quota_id, gt=version - 1)
    event = store.mapper.to_domain_event(stored)
    assert isinstance(event, MonthlyQuota.ThresholdReached)
    assert event.month == "2025-03"
    with psycopg.connect(PostgresTarget.from_url(database_url).conninfo()) as conn:
        row = conn.execute(SELECT_STORED_STATE, (quota_id, version)).fetchone()
    assert row is not None
    assert bytes(row[0]) == old


def test_only_snapshotted_types_look_for_a_snapshot(store: EventStore, database_url: str) -> None:
    """A row in the snapshots table under an entry's id (none is ever written:
    entries are not snapshotted) is never even read when the entry is loaded as
    an entry; the snapshot-aware path would fail on it."""
    history = TeamHistory(store)
    entry = JournalEntry.create(history.owner, id=uuid4(), title="t", body="b", tags=[])
    store.save([history.team, entry], metadata=EventMetadata(team_id=history.owner.team_id))
    with psycopg.connect(PostgresTarget.from_url(database_url).conninfo()) as conn:
        conn.execute(
            "INSERT INTO chronik_snapshots (originator_id, originator_version, topic, state) "
            "VALUES (%s, 1, 'no.such:Snapshot', 'not json')",
            (entry.id,),
        )
    loaded = store.get(entry.id, JournalEntry)
    assert loaded is not None
    assert loaded.title == "t"
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the library raises
        store.repository.get(entry.id, version=1)
