"""The scheduler: periodic jobs, each run by one worker process at a time, and
the job that issues scheduled prompts.

Every ``scheduler_interval`` real seconds a job's ``tick(now)`` runs, ``now``
from the scheduler's Clock (the wall clock, or a compressed one in tests).
Each job has a thread and a dedicated connection holding a session advisory
lock (class ``LOCK_CLASS``, a key from the job's name): the process holding
it runs the job, the others stand by and take over when its connection dies.
The lock only saves work. Correctness never depends on it: a tick must be
safe to run in several processes at once, as it is when a lock holder is
cut off from the database but still running, or two hold it one after the
other within a tick.

Prompts (``PromptScheduleJob``): each tick reads the scheduled, unarchived
prompts from the prompts read model and, for each, issues the due times of
its cron expression in its time zone after the last one issued (or after its
schedule was set) up to now, in order, through the ``issue_prompt`` command.
The prompt aggregate refuses a due time not after its last issued one, and
the event store's optimistic concurrency makes two schedulers racing for one
due time append the same version: one conflicts, retries on fresh state and is
refused. So each due time is issued exactly once, whatever the read model's
lag or the number of schedulers (see ``Prompt.issue``).

Catch-up: after downtime, at most ``prompt_catchup_limit`` due times of a
prompt are issued in one go, the LATEST ones; older missed ones are skipped
for good (logged) since a long-gone prompt is of no use, and the next tick
does not come back for them (they are before the last issued one).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol
from uuid import UUID
from zoneinfo import ZoneInfo

import psycopg
import structlog
from cronsim import CronSim, CronSimError
from eventsourcing.persistence import InterfaceError, OperationalError
from psycopg_pool import PoolTimeout

from aggregates.base import NotFound
from aggregates.errors import PromptAlreadyIssued, PromptArchived, PromptNotScheduled
from aggregates.prompt import Schedule
from commands.errors import VersionConflict
from commands.ports import EventStorePort, Unavailable
from commands.prompts import issue_prompt, scheduler_context
from infra.clock import Clock, clock_from
from infra.db import PostgresTarget
from infra.projection_wiring import connector
from infra.settings import Settings
from projections.prompts import ScheduledPrompt, scheduled_prompts
from projections.runner import Connect

__all__ = [
    "LOCK_CLASS",
    "PromptScheduleJob",
    "ScheduledJob",
    "Scheduler",
    "due_times",
    "job_lock_key",
    "next_due",
    "open_scheduler",
]

log = structlog.get_logger(__name__)

LOCK_CLASS: Final = 0x7363  # advisory lock (class, job key) of a job's active runner
BACKOFF_MIN: Final = 0.5
BACKOFF_MAX: Final = 5.0
# The database being away: the runner logs one line and backs off. Unavailable
# is what the event store raises for it (a prompt's issue).
TRANSIENT: Final = (
    Unavailable,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    OperationalError,
    InterfaceError,
    PoolTimeout,
)
_SECOND: Final = timedelta(seconds=1)


# -- due times -----------------------------------------------------------------------


def due_times(
    cron: str, timezone: str, after: datetime, until: datetime, limit: int
) -> list[datetime]:
    """The due times of ``cron`` read in ``timezone`` in (``after``, ``until``],
    oldest first, in UTC: at most ``limit``, the LATEST ones when there are more.

    Time zones follow Debian cron, as ``cronsim`` does: an expression with a
    fixed minute and hour (``30 2 * * *``) fires once a day by the local
    clock: in a spring-forward gap at the first minute after it (03:00 when
    02:30 does not exist), in a fall-back overlap once, at the first of the two
    02:30s. Other expressions (``* * * * *``, ``*/15 * * * *``, ``5 * * * *``)
    fire at every matching instant of real time: none in the gap, both in the
    overlap. An expression that can never fire (``0 0 31 2 *``) has none.

    The walk forward from ``after`` is authoritative; a walk back from
    ``until`` only finds where the latest ``limit`` begin, so a long downtime
    costs ``limit`` steps, not one per missed due time.
    """
    if limit <= 0 or until <= after:
        return []
    zone = ZoneInfo(timezone)
    try:
        start = after
        latest = list(_backward(cron, zone, after, until, limit + 1))
        if len(latest) == limit + 1:
            start = latest[-1]
        found: list[datetime] = []
        for due in _forward(cron, zone, start):
            if due > until:
                break
            found.append(due)
    except CronSimError:
        return []
    return found[-limit:]


def next_due(cron: str, timezone: str, after: datetime) -> datetime | None:
    """The first due time after ``after`` (UTC), None if there is none."""
    try:
        return next(_forward(cron, ZoneInfo(timezone), after), None)
    except CronSimError:
        return None


def _forward(cron: str, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Due times strictly after ``after``, in UTC, oldest first."""
    for due in CronSim(cron, after.astimezone(zone)):
        # A fixed-up local time (Debian semantics) is still after ``after``
        # except in a fall-back overlap walked with the clock's local time.
        found = due.astimezone(UTC)
        if found > after:
            yield found


def _backward(
    cron: str, zone: ZoneInfo, after: datetime, until: datetime, count: int
) -> Iterator[datetime]:
    """Up to ``count`` due times in (``after``, ``until``], in UTC, newest first."""
    # cronsim steps back one second before matching: start one second past
    # the whole second of ``until`` so that ``until`` itself can match.
    start = until.replace(microsecond=0) + _SECOND
    for n, due in enumerate(CronSim(cron, start.astimezone(zone), reverse=True)):
        found = due.astimezone(UTC)
        if n >= count or found <= after:
            return
        yield found


# -- the scheduler -------------------------------------------------------------------


class ScheduledJob(Protocol):
    """A periodic job: ``tick`` does what is due at ``now`` and must be safe to
    run in several processes at once (the lock only makes that rare)."""

    name: str

    def tick(self, now: datetime) -> None: ...


def job_lock_key(name: str) -> int:
    """The advisory lock key of job ``name`` (a signed 32-bit int, stable)."""
    return zlib.crc32(name.encode()) - 2**31


class _JobRunner:
    def __init__(
        self,
        job: ScheduledJob,
        *,
        connect: Connect,
        clock: Clock,
        interval: float,
        stopping: threading.Event,
    ) -> None:
        self.job = job
        self._connect = connect
        self._clock = clock
        self._interval = interval
        self._stopping = stopping
        self.active = threading.Event()  # set while this process holds the job's lock
        self._log = log.bind(job=job.name)
        self.thread = threading.Thread(target=self._run, name=f"scheduler-{job.name}", daemon=True)

    def _run(self) -> None:
        delay = BACKOFF_MIN
        while not self._stopping.is_set():
            try:
                with self._connect() as conn:
                    if not self._stand_by_until_locked(conn):
                        return
                    while not self._stopping.is_set():
                        # The lock lives as long as this session: check it still does.
                        conn.execute("SELECT 1")
                        self.job.tick(self._clock.now())
                        delay = BACKOFF_MIN
                        self._stopping.wait(self._interval)
            except TRANSIENT as exc:
                self._log.warning("scheduled job lost the database", error=str(exc))
            except Exception:  # noqa: BLE001 - a job's bug must not end the scheduler
                self._log.exception("scheduled job failed; retrying")
            finally:
                self.active.clear()
            self._stopping.wait(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    def _stand_by_until_locked(self, conn: psycopg.Connection[Any]) -> bool:
        key = job_lock_key(self.job.name)
        while not self._stopping.is_set():
            row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, key)).fetchone()
            if row is not None and row[0]:
                self.active.set()
                self._log.info("scheduled job is active in this process")
                return True
            self._stopping.wait(self._interval)
        return False


class Scheduler:
    """Runs each job's ``tick`` every ``interval`` real seconds on a thread of
    its own, in whichever process holds the job's lock; surviving the database
    going away (reconnect with backoff, lock taken again or by another)."""

    def __init__(
        self,
        jobs: Sequence[ScheduledJob],
        *,
        connect: Connect,
        clock: Clock,
        interval: float,
    ) -> None:
        names = [job.name for job in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"job names must be unique: {names}")
        self._stopping = threading.Event()
        self._runners = [
            _JobRunner(job, connect=connect, clock=clock, interval=interval,
                       stopping=self._stopping)
            for job in jobs
        ]  # fmt: skip

    def start(self) -> None:
        for runner in self._runners:
            runner.thread.start()
        log.info("scheduler started", jobs=[r.job.name for r in self._runners])

    def stop(self) -> None:
        self._stopping.set()
        for runner in self._runners:
            if runner.thread.is_alive():
                runner.thread.join(timeout=15)
            close = getattr(runner.job, "close", None)
            if callable(close):
                close()

    def active_jobs(self) -> frozenset[str]:
        """The jobs this process runs right now (holds the lock of)."""
        return frozenset(r.job.name for r in self._runners if r.active.is_set())


# -- prompts -------------------------------------------------------------------------


class PromptScheduleJob:
    """Issues the due times of every scheduled prompt (see the module's doc)."""

    name = "prompts"

    def __init__(self, store: EventStorePort, *, connect: Connect, catchup_limit: int) -> None:
        self._store = store
        self._connect = connect
        # 0 would issue nothing ever: at least the most recent due time is issued.
        self._limit = max(1, catchup_limit)
        self._conn: psycopg.Connection[Any] | None = None
        # What this process last saw issued, per prompt and schedule: spares
        # refused attempts while the read model has not caught up with them.
        self._issued: dict[UUID, tuple[Schedule, datetime]] = {}

    def tick(self, now: datetime) -> None:
        prompts = self._scheduled()
        if prompts is None:
            return
        known = {p.id for p in prompts}
        for gone in self._issued.keys() - known:
            del self._issued[gone]
        for prompt in prompts:
            try:
                self._catch_up(prompt, now)
            except TRANSIENT:
                raise
            except Exception:  # one prompt must not stop the others
                log.exception("scheduling a prompt failed", prompt_id=str(prompt.id))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _scheduled(self) -> list[ScheduledPrompt] | None:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        try:
            return scheduled_prompts(self._conn)
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
            # No live generation of the prompts read model yet, or an older one
            # while the new one is built: wait for it.
            log.warning("prompts read model not ready; scheduling waits", error=str(exc))
            return None
        except psycopg.Error:
            self.close()
            raise

    def _catch_up(self, prompt: ScheduledPrompt, now: datetime) -> None:
        schedule = prompt.schedule
        after = prompt.scheduled_since
        if prompt.last_issued_at is not None:
            after = max(after, prompt.last_issued_at)
        seen = self._issued.get(prompt.id)
        if seen is not None and seen[0] == schedule:
            after = max(after, seen[1])
        due = due_times(schedule.cron, schedule.timezone, after, now, self._limit)
        if not due:
            return
        self._log_skipped(prompt, after, due[0])
        for due_at in due:
            ctx = scheduler_context(prompt.team_id, prompt.id, due_at)
            try:
                result = issue_prompt(self._store, ctx, prompt.id, due_at, schedule=schedule)
            except PromptAlreadyIssued:
                pass  # another scheduler did (or the read model is behind): fine
            except (PromptNotScheduled, PromptArchived, NotFound) as exc:
                # Changed since the read model saw it: the next tick sees the change.
                log.info("prompt no longer due", prompt_id=str(prompt.id), reason=exc.message)
                return
            except VersionConflict:
                log.warning("prompt too contended to issue; next tick retries",
                            prompt_id=str(prompt.id), due_at=due_at.isoformat())  # fmt: skip
                return
            else:
                log.info("prompt issued", prompt_id=str(prompt.id), team_id=str(prompt.team_id),
                         due_at=due_at.isoformat(), position=result.position)  # fmt: skip
            self._issued[prompt.id] = (schedule, due_at)

    def _log_skipped(self, prompt: ScheduledPrompt, after: datetime, first_kept: datetime) -> None:
        """Due times older than the catch-up limit are not issued: say which."""
        schedule = prompt.schedule
        before = first_kept - timedelta(microseconds=1)
        latest = due_times(schedule.cron, schedule.timezone, after, before, 1)
        if not latest:
            return
        first = next_due(schedule.cron, schedule.timezone, after) or latest[0]
        log.warning(
            "missed due times past the catch-up limit are skipped",
            prompt_id=str(prompt.id),
            first_skipped=first.isoformat(),
            last_skipped=latest[0].isoformat(),
            catchup_limit=self._limit,
        )


def open_scheduler(
    settings: Settings, store: EventStorePort, jobs: Sequence[ScheduledJob] = ()
) -> Scheduler:
    """The scheduler with the prompt job and ``jobs`` (e.g. daily digests)."""
    connect = connector(PostgresTarget.from_url(settings.database_url_value()),
                        name="chronik-scheduler")  # fmt: skip
    prompts = PromptScheduleJob(store, connect=connect,
                                catchup_limit=settings.prompt_catchup_limit)  # fmt: skip
    return Scheduler(
        [prompts, *jobs],
        connect=connect,
        clock=clock_from(settings),
        interval=settings.scheduler_interval,
    )
