"""The prompt job and the scheduler against real PostgreSQL: due times issued
once each, in order, up to the catch-up limit; races between schedulers; one
active runner per job that survives losing its connection."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

import orjson
import pytest
from eventsourcing.utils import get_topic

from aggregates.prompt import Prompt
from commands import prompts
from commands.context import CommandContext
from commands.models import CreatePrompt, EditPrompt, ScheduleIn
from commands.ports import EventStorePort, Unavailable
from infra.clock import Clock
from infra.db import PostgresTarget
from infra.devstack.processes import wait_until
from infra.event_store import EventStore
from infra.projection_wiring import connector
from infra.scheduler import LOCK_CLASS, PromptScheduleJob, Scheduler, job_lock_key
from projections.prompts import PromptsProjection
from projections.runner import Connect
from tests.projection_support import TeamFixture, connect, create_team, running_worker
from tests.projection_support import wait_caught_up as caught_up

EVERY_MINUTE = ScheduleIn(cron="* * * * *", timezone="Europe/Berlin")
ISSUED = get_topic(Prompt) + ".Issued"


@pytest.fixture
def projected(database_url: str, store: EventStore) -> Iterator[None]:
    """The prompts read model, kept up to date."""
    with running_worker(database_url, store, [PromptsProjection()]):
        yield


def _connect(url: str) -> Connect:
    return connector(PostgresTarget.from_url(url), name="test-scheduler")


def _job(url: str, store: EventStore, limit: int = 100) -> PromptScheduleJob:
    return PromptScheduleJob(store, connect=_connect(url), catchup_limit=limit)


def _prompt(store: EventStore, team: TeamFixture, schedule: ScheduleIn = EVERY_MINUTE) -> UUID:
    created = prompts.create_prompt(
        store, CommandContext(actor=team.owner), CreatePrompt(text="How did it go?",
                                                              schedule=schedule)
    )  # fmt: skip
    return UUID(created.data["id"])


def _created_at(store: EventStore, prompt_id: UUID) -> datetime:
    prompt = store.get(prompt_id, Prompt)
    assert prompt is not None
    return prompt.created_on


def _minute_after(moment: datetime, minutes: int) -> datetime:
    """The whole minute ``minutes`` after the one ``moment`` falls in."""
    return moment.replace(second=0, microsecond=0) + timedelta(minutes=minutes)


def issued(url: str, prompt_id: UUID) -> list[datetime]:
    """The due times recorded for the prompt, in log order (duplicates kept)."""
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT state FROM chronik_events WHERE originator_id = %s AND topic = %s"
            " ORDER BY notification_id",
            (prompt_id, ISSUED),
        ).fetchall()
    return [datetime.fromisoformat(orjson.loads(state)["due_at"]) for (state,) in rows]


def test_due_times_are_issued_once_each_in_order(
    database_url: str, store: EventStore, projected: None
) -> None:
    team = create_team(store)
    prompt_id = _prompt(store, team)
    created = _created_at(store, prompt_id)
    caught_up(database_url, "prompts")
    job = _job(database_url, store)
    now = _minute_after(created, 3) + timedelta(seconds=20)
    job.tick(now)
    expected = [_minute_after(created, n) for n in (1, 2, 3)]
    assert issued(database_url, prompt_id) == expected
    job.tick(now)  # nothing new is due
    caught_up(database_url, "prompts")
    job.tick(now)
    _job(database_url, store).tick(now)  # a fresh process, from the read model
    assert issued(database_url, prompt_id) == expected

    prompt = store.get(prompt_id, Prompt)
    assert prompt is not None
    assert prompt.last_issued_at == expected[-1]
    with connect(database_url) as conn:
        row = conn.execute(
            "SELECT last_issued_at, version FROM reads.prompts WHERE id = %s", (prompt_id,)
        ).fetchone()
    assert row == (expected[-1], prompt.version)

    job.tick(now + timedelta(minutes=1))
    assert issued(database_url, prompt_id) == [*expected, _minute_after(created, 4)]


def test_issued_events_carry_the_text_and_no_actor(
    database_url: str, store: EventStore, projected: None
) -> None:
    team = create_team(store)
    prompt_id = _prompt(store, team)
    created = _created_at(store, prompt_id)
    caught_up(database_url, "prompts")
    _job(database_url, store).tick(_minute_after(created, 1))
    events = [e for e in store.events.get(prompt_id) if type(e).__name__ == "Issued"]
    assert len(events) == 1
    [event] = events
    assert event.__dict__["text"] == "How did it go?"
    metadata = event.__dict__["metadata"]
    assert metadata.team_id == team.team_id
    assert metadata.actor_user_id is None
    assert metadata.command == "IssuePrompt"
    assert metadata.correlation_id.startswith(f"prompt-schedule:{prompt_id}:")


def test_after_downtime_only_the_latest_missed_due_times_up_to_the_limit(
    database_url: str, store: EventStore, projected: None
) -> None:
    team = create_team(store)
    prompt_id = _prompt(store, team)
    created = _created_at(store, prompt_id)
    caught_up(database_url, "prompts")
    job = _job(database_url, store, limit=3)
    job.tick(_minute_after(created, 1))
    caught_up(database_url, "prompts")
    # Down for ten minutes: of the ten missed due times, the latest three.
    restarted = _job(database_url, store, limit=3)
    restarted.tick(_minute_after(created, 11) + timedelta(seconds=5))
    assert issued(database_url, prompt_id) == [_minute_after(created, n) for n in (1, 9, 10, 11)]
    # The skipped ones never come later.
    caught_up(database_url, "prompts")
    restarted.tick(_minute_after(created, 12))
    _job(database_url, store, limit=3).tick(_minute_after(created, 12))
    assert issued(database_url, prompt_id) == [
        _minute_after(created, n) for n in (1, 9, 10, 11, 12)
    ]


def test_racing_schedulers_issue_each_due_time_once(
    database_url: str, store: EventStore, projected: None
) -> None:
    """No lock here: the aggregate's guard and the store's optimistic
    concurrency alone keep each due time to one event."""
    team = create_team(store)
    ids = [_prompt(store, team) for _ in range(3)]
    created = max(_created_at(store, i) for i in ids)
    caught_up(database_url, "prompts")
    jobs = [_job(database_url, store, limit=5) for _ in range(6)]
    start = threading.Barrier(len(jobs))

    def run(job: PromptScheduleJob) -> None:
        start.wait()
        for minutes in (3, 4, 6):
            job.tick(_minute_after(created, minutes))

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for prompt_id in ids:
        found = issued(database_url, prompt_id)
        assert Counter(found).most_common(1)[0][1] == 1, found
        assert found == sorted(found)
        assert found[-1] == _minute_after(created, 6)


def test_archived_unscheduled_and_rescheduled_prompts(database_url: str, store: EventStore) -> None:
    """Changed after the read model last saw them: the aggregate refuses the
    stale due times, quietly; once the read model has the changes, only the
    rescheduled prompt falls due, at its new times, counted from the change."""
    team = create_team(store)
    ctx = CommandContext(actor=team.owner)
    archived, unscheduled, rescheduled = (_prompt(store, team) for _ in range(3))
    created = max(_created_at(store, i) for i in (archived, unscheduled, rescheduled))
    with running_worker(database_url, store, [PromptsProjection()]):
        caught_up(database_url, "prompts")
    prompts.archive_prompt(store, ctx, archived)
    prompts.edit_prompt(store, ctx, unscheduled, EditPrompt(clear_schedule=True))
    hourly = ScheduleIn(cron="0 * * * *", timezone="UTC")
    prompts.edit_prompt(store, ctx, rescheduled, EditPrompt(schedule=hourly))
    job = _job(database_url, store)
    job.tick(_minute_after(created, 2))  # from the stale read model
    for prompt_id in (archived, unscheduled, rescheduled):
        assert issued(database_url, prompt_id) == []
    with running_worker(database_url, store, [PromptsProjection()]):
        caught_up(database_url, "prompts")
    job.tick(created + timedelta(hours=1, minutes=1))
    assert issued(database_url, archived) == issued(database_url, unscheduled) == []
    [due] = issued(database_url, rescheduled)
    assert (due.minute, due.second) == (0, 0)
    assert created < due <= created + timedelta(hours=1)


def test_one_process_runs_a_job_and_another_takes_over(database_url: str) -> None:
    ticks: list[tuple[str, datetime]] = []

    class Recorder:
        name = "recorder"

        def __init__(self, owner: str) -> None:
            self.owner = owner

        def tick(self, now: datetime) -> None:
            ticks.append((self.owner, now))

    clock = Clock(origin=datetime.now(UTC), scale=60)
    first = Scheduler([Recorder("first")], connect=_connect(database_url), clock=clock,
                      interval=0.05)  # fmt: skip
    second = Scheduler([Recorder("second")], connect=_connect(database_url), clock=clock,
                       interval=0.05)  # fmt: skip
    first.start()
    try:
        wait_until(lambda: first.active_jobs() == {"recorder"}, timeout=10, what="first active")
        second.start()
        wait_until(lambda: len(ticks) >= 5, timeout=10, what="ticks")
        assert second.active_jobs() == frozenset()
        assert {owner for owner, _ in ticks} == {"first"}
        first.stop()
        wait_until(lambda: second.active_jobs() == {"recorder"}, timeout=10, what="takeover")
        wait_until(lambda: ticks[-1][0] == "second", timeout=10, what="second ticking")
    finally:
        first.stop()
        second.stop()
    times = [now for _, now in ticks]
    assert times == sorted(times)


def _lock_holder(url: str, name: str) -> int | None:
    key = job_lock_key(name) % 2**32  # pg_locks shows the int4 keys as oids
    with connect(url) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = %s AND objid = %s AND objsubid = 2 AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())",
            (LOCK_CLASS, key),
        ).fetchone()
    return None if row is None else int(row[0])


def test_a_runner_whose_connection_dies_takes_the_job_again(database_url: str) -> None:
    ticks: list[datetime] = []

    class Recorder:
        name = "recorder"

        def tick(self, now: datetime) -> None:
            ticks.append(now)

    scheduler = Scheduler([Recorder()], connect=_connect(database_url), clock=Clock(),
                          interval=0.05)  # fmt: skip
    scheduler.start()
    try:
        wait_until(lambda: scheduler.active_jobs() == {"recorder"}, timeout=10, what="active")
        holder = _lock_holder(database_url, "recorder")
        assert holder is not None
        with connect(database_url) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (holder,))
        wait_until(
            lambda: _lock_holder(database_url, "recorder") not in (None, holder),
            timeout=15,
            what="the job locked again on a new connection",
        )
        seen = len(ticks)
        wait_until(lambda: len(ticks) > seen + 2, timeout=10, what="ticking again")
    finally:
        scheduler.stop()


class _DownStore:
    """The event store while PostgreSQL is down: every call raises Unavailable."""

    def __getattr__(self, name: str) -> Any:
        def down(*_args: Any, **_kwargs: Any) -> Any:
            raise Unavailable("the database is down")

        return down


def test_the_event_store_being_down_ends_the_tick_to_back_off(
    database_url: str, store: EventStore, projected: None
) -> None:
    """Unavailable is transient: the tick ends (the runner logs once and backs
    off) instead of a stack trace per prompt and the next prompt trying again."""
    team = create_team(store)
    first, second = _prompt(store, team), _prompt(store, team)
    created = max(_created_at(store, first), _created_at(store, second))
    caught_up(database_url, "prompts")
    job = PromptScheduleJob(
        cast(EventStorePort, _DownStore()), connect=_connect(database_url), catchup_limit=100
    )
    try:
        with pytest.raises(Unavailable):
            job.tick(_minute_after(created, 2))
    finally:
        job.close()
    assert issued(database_url, first) == issued(database_url, second) == []
