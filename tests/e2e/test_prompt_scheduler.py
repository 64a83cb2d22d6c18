"""Three `chronik worker --only scheduler` processes and a prompt due every
minute, on a clock 60 times faster than real time: each due time is issued
exactly once, also when the process running the job is killed; after all
three stop for five minutes, the missed due times are issued once each on
restart, the latest ones up to the catch-up limit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from uuid import UUID

import orjson

from commands import prompts
from commands.context import CommandContext
from commands.models import CreatePrompt, ScheduleIn
from infra.clock import Clock
from infra.db import PostgresTarget
from infra.devstack.processes import wait_until
from infra.event_store import open_event_store
from infra.settings import Settings
from projections.prompts import PromptsProjection
from tests.integration.test_prompt_scheduler import issued
from tests.projection_support import create_team, running_worker

SCALE = 60  # a clock-minute is a real second
CATCHUP_LIMIT = 3
WORKERS = 3
MINUTE = timedelta(minutes=1)


def _start(settings: Settings, origin: datetime, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CHRONIK_DATABASE_URL": settings.database_url_value(),
        "CHRONIK_NATS_NAMESPACE": settings.nats_namespace,
        "CHRONIK_SCHEDULER_TIME_SCALE": str(SCALE),
        "CHRONIK_SCHEDULER_TIME_ORIGIN": origin.isoformat(),
        "CHRONIK_SCHEDULER_INTERVAL": "0.1",
        "CHRONIK_PROMPT_CATCHUP_LIMIT": str(CATCHUP_LIMIT),
        "CHRONIK_LOG_LEVEL": "INFO",
        # Read while the process runs (who holds the job): unbuffered.
        "PYTHONUNBUFFERED": "1",
    }
    log.parent.mkdir(exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "worker", "--only", "scheduler"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@contextmanager
def _schedulers(
    settings: Settings, origin: datetime, logs: Path
) -> Iterator[list[tuple[subprocess.Popen[bytes], Path]]]:
    started = [logs / f"scheduler-{n}.log" for n in range(WORKERS)]
    processes = [(_start(settings, origin, log), log) for log in started]
    try:
        yield processes
    finally:
        for process, _ in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in processes:
            process.wait(timeout=30)


def _leaders(processes: list[tuple[subprocess.Popen[bytes], Path]]) -> list[int]:
    """Which processes took the prompt job (each logs it once per taking)."""
    return [
        n
        for n, (_, log) in enumerate(processes)
        for line in log.read_text().splitlines()
        # Other jobs (daily digests) have leaders of their own.
        if "scheduled job is active" in line and _job_of(line) == "prompts"
    ]


def _job_of(line: str) -> object:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return record.get("job") if isinstance(record, dict) else None


def _floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _consecutive(times: list[datetime]) -> bool:
    return all(b - a == MINUTE for a, b in pairwise(times))


def test_three_schedulers_issue_each_due_time_once_and_catch_up_after_downtime(
    settings: Settings, tmp_path: Path
) -> None:
    url = settings.database_url_value()
    store = open_event_store(PostgresTarget.from_url(url), pool_size=2)
    origin = datetime.now(UTC)
    clock = Clock(origin, SCALE)
    with ExitStack() as stack:
        stack.callback(store.close)
        # The read model the schedulers find prompts in.
        stack.enter_context(running_worker(url, store, [PromptsProjection()]))
        team = create_team(store)
        created = prompts.create_prompt(
            store,
            CommandContext(actor=team.owner),
            CreatePrompt(text="Standup?", schedule=ScheduleIn(cron="* * * * *", timezone="UTC")),
        )
        prompt_id = UUID(created.data["id"])

        with _schedulers(settings, origin, tmp_path / "first") as processes:
            wait_until(lambda: len(issued(url, prompt_id)) >= 3, timeout=20, what="3 due times")
            # The process running the job dies without a word: another takes over.
            [leader] = _leaders(processes)
            processes[leader][0].kill()
            wait_until(lambda: len(_leaders(processes)) == 2, timeout=10, what="a takeover")
            wait_until(lambda: len(issued(url, prompt_id)) >= 7, timeout=20, what="7 due times")
        before = issued(url, prompt_id)
        stopped_at = clock.now()
        # Exactly once, every minute, none skipped while the schedulers ran
        # (the takeover took less than a clock-minute).
        assert len(set(before)) == len(before), before
        assert _consecutive(before), before
        last = before[-1]

        # All three down for five minutes of the clock.
        wait_until(lambda: clock.now() >= stopped_at + 5 * MINUTE, timeout=10, what="downtime")
        assert issued(url, prompt_id) == before
        restarted_at = clock.now()
        with _schedulers(settings, origin, tmp_path / "second"):
            wait_until(
                lambda: len(issued(url, prompt_id)) >= len(before) + CATCHUP_LIMIT + 2,
                timeout=20,
                what="the catch-up and two more due times",
            )
        after = issued(url, prompt_id)

    assert len(set(after)) == len(after), after
    assert after[: len(before)] == before
    new = after[len(before) :]
    caught_up, later = new[:CATCHUP_LIMIT], new[CATCHUP_LIMIT:]
    # The latest three missed due times at the first look after the restart
    # (at least five were missed), then every minute again.
    assert _consecutive(caught_up), new
    assert caught_up[-1] >= _floor_minute(restarted_at), (caught_up, restarted_at)
    assert caught_up[0] - last >= (5 + 1 - CATCHUP_LIMIT) * MINUTE, (last, new)
    assert _consecutive([caught_up[-1], *later]), new
    # The skipped ones were never issued.
    assert not [t for t in after if last < t < caught_up[0]]
