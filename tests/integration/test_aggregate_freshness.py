"""Cached aggregates kept current from the log (infra.aggregate_freshness), on
real PostgreSQL: two stores on one database stand for two API processes."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from eventsourcing.domain import event

from aggregates.base import Aggregate, EventMetadata
from commands.ports import Conflict
from infra.aggregate_freshness import AggregateFreshness
from infra.db import PostgresTarget
from infra.devstack.processes import wait_until
from infra.event_store import (
    _LOAD_LOCKS,
    FRESHNESS_READER,
    EventStore,
    head_position,
    library_env,
    open_event_store,
)

METADATA = EventMetadata(
    team_id=uuid.UUID(int=7), actor_user_id=uuid.UUID(int=1), actor_key_id="k", command="Count"
)


class Counter(Aggregate):
    @event("Started")
    def __init__(self) -> None:
        self.total = Decimal(0)
        self.labels: dict[str, int] = {}

    @event("Added")
    def add(self, amount: Decimal) -> None:
        self.total += amount

    @event("Labelled")
    def label(self, name: str) -> None:
        self.labels[name] = self.labels.get(name, 0) + 1  # changed in place


@pytest.fixture
def open_store(database_url: str) -> Iterator[Callable[..., EventStore]]:
    opened: list[EventStore] = []

    def open_(*, follow_changes: bool = True) -> EventStore:
        store = open_event_store(
            PostgresTarget.from_url(database_url), pool_size=2, follow_changes=follow_changes
        )
        opened.append(store)
        if store.freshness is not None:
            following = store.freshness
            wait_until(lambda: following.position is not None, timeout=10, what="reading")
        return store

    yield open_
    for store in opened:
        store.close()


def _counting_loads(store: EventStore) -> list[Any]:
    """The queries ``store`` makes for an aggregate's events (spied, not replaced)."""
    calls: list[Any] = []
    real = store.recorder_.select_events

    def select_events(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    store.recorder_.select_events = select_events
    return calls


def _caught_up(store: EventStore, position: int) -> Callable[[], bool]:
    freshness = store.freshness
    assert freshness is not None
    return lambda: (freshness.position or 0) >= position


def test_a_current_cached_aggregate_loads_without_a_query(
    open_store: Callable[..., EventStore],
) -> None:
    store = open_store()
    counter = Counter()
    counter.add(Decimal(2))
    store.save([counter], metadata=METADATA)
    loads = _counting_loads(store)

    for _ in range(3):
        loaded = store.get(counter.id, Counter)
        assert loaded is not None
        assert (loaded.version, loaded.total) == (2, Decimal(2))
        loaded.add(Decimal(1))  # a copy: the cached one is not changed by this

    assert loads == []
    assert store.get(counter.id, Counter).total == Decimal(2)  # type: ignore[union-attr]


def test_a_change_made_by_another_process_is_seen(
    open_store: Callable[..., EventStore],
) -> None:
    here, there = open_store(), open_store()
    counter = Counter()
    [position] = here.save([counter], metadata=METADATA)
    assert here.get(counter.id, Counter) is not None

    elsewhere = there.get(counter.id, Counter)
    assert elsewhere is not None
    elsewhere.add(Decimal(5))
    [changed_at] = there.save([elsewhere], metadata=METADATA)

    wait_until(_caught_up(here, changed_at), timeout=10, what="the change read here")
    loads = _counting_loads(here)
    seen = here.get(counter.id, Counter)
    assert seen is not None
    assert (seen.version, seen.total) == (2, Decimal(5))
    assert len(loads) == 1  # brought up to date once, then current again
    assert here.get(counter.id, Counter).version == 2  # type: ignore[union-attr]
    assert len(loads) == 1
    assert changed_at > position


def test_a_copy_made_stale_before_the_news_arrives_conflicts_and_the_retry_is_fresh(
    database_url: str, open_store: Callable[..., EventStore]
) -> None:
    # A reader that hears nothing for the test's length: the window between
    # another process's commit and its notification, held open.
    target = PostgresTarget.from_url(database_url)
    conninfo = target.conninfo()
    silent = AggregateFreshness(
        lambda: psycopg.connect(conninfo, autocommit=True),
        "chronik_nobody_notifies_this",
        head=head_position,
        poll_seconds=600,
        stale_after=600,
    )
    here = EventStore(library_env(target, pool_size=2), freshness=silent)
    try:
        wait_until(lambda: silent.position is not None, timeout=10, what="reading")
        there = open_store(follow_changes=False)
        counter = Counter()
        here.save([counter], metadata=METADATA)
        elsewhere = there.get(counter.id, Counter)
        assert elsewhere is not None
        elsewhere.add(Decimal(5))
        there.save([elsewhere], metadata=METADATA)

        stale = here.get(counter.id, Counter)
        assert stale is not None
        assert stale.version == 1  # the window: not yet heard of
        stale.add(Decimal(1))
        with pytest.raises(Conflict):
            here.save([stale], metadata=METADATA)

        retried = here.get(counter.id, Counter)
        assert retried is not None
        assert (retried.version, retried.total) == (2, Decimal(5))
        retried.add(Decimal(1))
        here.save([retried], metadata=METADATA)
        assert there.get(counter.id, Counter).total == Decimal(6)  # type: ignore[union-attr]
    finally:
        here.close()


def test_a_reader_that_lost_its_connection_resumes_where_it_stopped(
    database_url: str, open_store: Callable[..., EventStore]
) -> None:
    here, there = open_store(), open_store(follow_changes=False)
    counter = Counter()
    here.save([counter], metadata=METADATA)
    assert here.get(counter.id, Counter) is not None

    with psycopg.connect(database_url, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            (FRESHNESS_READER,),
        ).fetchall()
        assert ended == [(True,)]
        elsewhere = there.get(counter.id, Counter)
        assert elsewhere is not None
        elsewhere.add(Decimal(3))
        [changed_at] = there.save([elsewhere], metadata=METADATA)

    wait_until(_caught_up(here, changed_at), timeout=15, what="the reader back")
    seen = here.get(counter.id, Counter)
    assert seen is not None
    assert (seen.version, seen.total) == (2, Decimal(3))


def test_without_following_every_load_asks_the_database(
    open_store: Callable[..., EventStore],
) -> None:
    store = open_store(follow_changes=False)
    counter = Counter()
    store.save([counter], metadata=METADATA)
    loads = _counting_loads(store)
    store.get(counter.id, Counter)
    store.get(counter.id, Counter)
    assert len(loads) == 2


def test_what_a_process_saved_is_cached_as_a_copy_of_its_own(
    open_store: Callable[..., EventStore],
) -> None:
    store = open_store()
    counter = Counter()
    counter.add(Decimal(2))
    store.save([counter], metadata=METADATA)
    counter.add(Decimal(40))  # the caller's object, changed after its save

    loaded = store.get(counter.id, Counter)
    assert loaded is not None
    assert (loaded.version, loaded.total) == (2, Decimal(2))


def test_only_aggregates_with_appended_events_are_cached_by_a_save(
    open_store: Callable[..., EventStore],
) -> None:
    here, there = open_store(), open_store(follow_changes=False)
    untouched = Counter()
    there.save([untouched], metadata=METADATA)
    stale = there.get(untouched.id, Counter)
    assert stale is not None
    newer = there.get(untouched.id, Counter)
    assert newer is not None
    newer.add(Decimal(1))
    there.save([newer], metadata=METADATA)

    changed = Counter()
    here.save([changed, stale], metadata=METADATA)  # ``stale`` has nothing to append

    cache = here.repository.cache
    assert cache is not None
    with pytest.raises(KeyError):
        cache.get(stale.id)
    assert cache.get(changed.id).version == 1


def test_from_memory_only_a_current_copy_is_given_and_nothing_waits(
    open_store: Callable[..., EventStore],
) -> None:
    here, there = open_store(), open_store()
    counter = Counter()
    there.save([counter], metadata=METADATA)
    loads = _counting_loads(here)
    assert here.get_if_current(counter.id, Counter) is None  # not in memory here
    assert here.get(counter.id, Counter) is not None

    copy = here.get_if_current(counter.id, Counter)
    assert copy is not None
    copy.label("mine")  # a copy: the cached one, its dict included, is not changed by this
    again = here.get_if_current(counter.id, Counter)
    assert again is not None
    assert (again.version, again.labels) == (1, {})
    assert here.get_if_current(counter.id, Aggregate) is not None
    assert len(loads) == 1

    elsewhere = there.get(counter.id, Counter)
    assert elsewhere is not None
    elsewhere.add(Decimal(5))
    [changed_at] = there.save([elsewhere], metadata=METADATA)
    wait_until(_caught_up(here, changed_at), timeout=10, what="the change read here")
    assert here.get_if_current(counter.id, Counter) is None  # known to be stale
    assert len(loads) == 1


def test_from_memory_gives_nothing_while_another_thread_loads_it(
    open_store: Callable[..., EventStore],
) -> None:
    store = open_store()
    counter = Counter()
    store.save([counter], metadata=METADATA)
    assert store.get_if_current(counter.id, Counter) is not None
    holding, release = threading.Event(), threading.Event()

    def load_elsewhere() -> None:  # as a get() of another thread, mid-load
        with _LOAD_LOCKS.held(counter.id):
            holding.set()
            release.wait(10)

    loader = threading.Thread(target=load_elsewhere)
    loader.start()
    assert holding.wait(10)
    answers: list[Counter | None] = []
    asker = threading.Thread(
        target=lambda: answers.append(store.get_if_current(counter.id, Counter))
    )
    asker.start()
    asker.join(5)  # it must answer without waiting for the loader
    release.set()
    loader.join(10)
    asker.join(10)
    assert answers == [None]
    assert store.get_if_current(counter.id, Counter) is not None


def test_without_following_nothing_is_given_from_memory(
    open_store: Callable[..., EventStore],
) -> None:
    store = open_store(follow_changes=False)
    counter = Counter()
    store.save([counter], metadata=METADATA)
    assert store.get(counter.id, Counter) is not None
    assert store.get_if_current(counter.id, Counter) is None
