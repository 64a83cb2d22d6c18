"""Group commit on real PostgreSQL: commands that queue behind one transaction
share the next, and each still succeeds or fails on its own."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import psycopg
import pytest
from eventsourcing.domain import event
from eventsourcing.persistence import StoredEvent

from aggregates.base import Aggregate, EventMetadata
from commands.ports import Conflict
from commands.records import ApiKeyIndexed, CommandRecord, IdempotencyRecorded
from infra.devstack.processes import wait_until
from infra.event_store import EVENTS_TABLE, EventStore
from infra.group_commit import GroupCommitter

TEAM = uuid.UUID(int=7)


class Tally(Aggregate):
    @event("Opened")
    def __init__(self, label: str) -> None:
        self.label = label
        self.count = 0

    @event("Counted")
    def count_one(self) -> None:
        self.count += 1


def _stored(store: EventStore, tally: Tally) -> list[StoredEvent]:
    metadata = EventMetadata(team_id=TEAM, command="Count")
    stored = []
    for pending in tally.collect_events():
        assert isinstance(pending, Aggregate.Event)
        stored.append(
            store.mapper.to_stored_event(pending.model_copy(update={"metadata": metadata}))
        )
    return stored


def _idempotency(key: str) -> IdempotencyRecorded:
    return IdempotencyRecorded(
        team_id=TEAM,
        idempotency_key=key,
        request_fingerprint="f",
        status_code=201,
        response={"data": {}},
    )


@contextmanager
def _table_locked(database_url: str) -> Iterator[None]:
    """Holds the event table's lock, so appends queue behind it."""
    with psycopg.connect(database_url) as conn:
        conn.execute(f"LOCK TABLE {EVENTS_TABLE} IN EXCLUSIVE MODE")
        yield
        conn.rollback()


def _lock_waiters(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE relation = %s::regclass AND NOT granted",
            (EVENTS_TABLE,),
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture(params=["one statement", "one pipeline"])
def path(request: pytest.FixtureRequest) -> str:
    """Which way a batch is written: events and idempotency records alone go
    in one statement; any other record makes it a pipeline of SAVEPOINTs."""
    return str(request.param)


def _records(path: str, key: str | None = None) -> list[CommandRecord]:
    records: list[CommandRecord] = [] if key is None else [_idempotency(key)]
    if path == "one pipeline":
        records.append(ApiKeyIndexed(uuid.uuid4().hex[:16], TEAM))
    return records


def _queued(committer: GroupCommitter, count: int) -> Callable[[], bool]:
    return lambda: committer.waiting == count


@pytest.fixture
def committer(store: EventStore) -> Iterator[GroupCommitter]:
    committer = GroupCommitter(store.recorder_, max_batch=512)
    yield committer
    committer.close()


def test_queued_commands_share_one_transaction_and_fail_alone(
    store: EventStore, committer: GroupCommitter, database_url: str, path: str
) -> None:
    first = Tally(label="first")
    winner = Tally(label="raced")
    store.save([winner], metadata=EventMetadata(team_id=TEAM))
    loser = store.get(winner.id, Tally)
    assert loser is not None
    winner.count_one()
    loser.count_one()  # the same version as the winner's: one of them must lose
    bystander = Tally(label="bystander")
    appends = [_stored(store, t) for t in (first, winner, loser, bystander)]

    with ThreadPoolExecutor(4) as pool, _table_locked(database_url):
        held: Future[list[int]] = pool.submit(committer.append, appends[0], _records(path))
        wait_until(lambda: _lock_waiters(database_url) == 1, timeout=10, what="first batch waits")
        queued = [pool.submit(committer.append, a, _records(path)) for a in appends[1:]]
        wait_until(lambda: committer.waiting == 3, timeout=10, what="three commands queue")

    assert held.result(timeout=10)
    won = queued[0].result(timeout=10)
    with pytest.raises(Conflict):
        queued[1].result(timeout=10)
    kept = queued[2].result(timeout=10)
    # Four commands, two transactions: the three that queued went together,
    # and the loser's rolled-back insert burned the position between the others.
    assert committer.transactions == 2
    assert kept[0] == won[-1] + 2
    reloaded = store.get(winner.id, Tally)
    assert reloaded is not None
    assert reloaded.count == 1
    assert store.get(bystander.id, Tally) is not None


def test_a_taken_idempotency_key_undoes_that_command_s_events_only(
    store: EventStore, committer: GroupCommitter, database_url: str, path: str
) -> None:
    one, two, three = Tally(label="one"), Tally(label="two"), Tally(label="three")
    with ThreadPoolExecutor(4) as pool, _table_locked(database_url):
        blocker = pool.submit(committer.append, _stored(store, Tally(label="blocker")), ())
        wait_until(lambda: _lock_waiters(database_url) == 1, timeout=10, what="first batch waits")
        first = pool.submit(committer.append, _stored(store, one), _records(path, "k"))
        wait_until(lambda: committer.waiting == 1, timeout=10, what="the first command queues")
        second = pool.submit(committer.append, _stored(store, two), _records(path, "k"))
        third = pool.submit(committer.append, _stored(store, three), _records(path, "other"))
        wait_until(lambda: committer.waiting == 3, timeout=10, what="three commands queue")

    blocker.result(timeout=10)
    positions = first.result(timeout=10)
    with pytest.raises(Conflict):
        second.result(timeout=10)
    assert third.result(timeout=10)
    assert store.get(two.id, Tally) is None
    stored = store.find_idempotent_response(TEAM, "k")
    assert stored is not None
    assert stored.response["position"] == positions[-1]


def test_many_concurrent_saves_each_get_their_own_contiguous_positions(
    store: EventStore,
) -> None:
    tallies = [Tally(label=f"t{n}") for n in range(200)]
    for tally in tallies:
        tally.count_one()
        tally.count_one()
    results: dict[uuid.UUID, list[int]] = {}
    lock = threading.Lock()

    def save(tally: Tally) -> None:
        positions = store.save([tally], metadata=EventMetadata(team_id=TEAM))
        with lock:
            results[tally.id] = positions

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(save, tallies))

    everything = sorted(p for ps in results.values() for p in ps)
    assert len(everything) == len(set(everything)) == 600
    for positions in results.values():
        assert positions == list(range(positions[0], positions[0] + 3))
    assert store.head_position() == everything[-1]


def test_a_closed_committer_refuses_new_work(store: EventStore) -> None:
    committer = GroupCommitter(store.recorder_, max_batch=8)
    assert committer.append(_stored(store, Tally(label="before")), ())
    committer.close()
    with pytest.raises(Exception, match="closed"):
        committer.append(_stored(store, Tally(label="after")), ())


def test_a_long_batch_with_failures_anywhere_keeps_exactly_the_others(
    store: EventStore, committer: GroupCommitter, database_url: str, path: str
) -> None:
    # Long enough that errors come back while later commands are still being
    # sent, not only at the end of the round.
    tallies = [Tally(label=f"t{n}") for n in range(300)]
    keys = [f"k{n - 1}" if n % 7 == 3 else f"k{n}" for n in range(300)]
    doomed = {n for n in range(300) if n % 7 == 3}
    with ThreadPoolExecutor(301) as pool, _table_locked(database_url):
        blocker = pool.submit(committer.append, _stored(store, Tally(label="blocker")), ())
        wait_until(lambda: _lock_waiters(database_url) == 1, timeout=10, what="first batch waits")
        answers = []
        for n, tally in enumerate(tallies):
            answers.append(
                pool.submit(committer.append, _stored(store, tally), _records(path, keys[n]))
            )
            wait_until(_queued(committer, n + 1), timeout=10, what="each in its turn")

    blocker.result(timeout=30)
    for n, answer in enumerate(answers):
        if n in doomed:
            with pytest.raises(Conflict):
                answer.result(timeout=30)
            assert store.get(tallies[n].id, Tally) is None
        else:
            assert answer.result(timeout=30)
            assert store.get(tallies[n].id, Tally) is not None
    assert committer.transactions == 2
