"""What ``chronik worker`` and ``chronik projections ...`` do."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Final

import psycopg
import structlog
from psycopg import sql
from tqdm import tqdm

from infra.db import PostgresTarget
from infra.digests import DigestJob
from infra.event_store import head_position, open_event_store
from infra.fanout import Fanout
from infra.jobs import SyncCompactor
from infra.projection_wiring import (
    StoredEventSource,
    checkpoint_signer,
    connector,
    open_projection_worker,
    projections_for,
    runner_config,
)
from infra.scheduler import open_scheduler
from infra.settings import Settings
from infra.tracing import setup_tracing, shutdown_tracing
from infra.worker_metrics import WorkerMetricsServer
from projections import registry
from projections.audit_ledger import DEFAULT_CHECKPOINT_EVERY
from projections.base import Projection
from projections.catalog import all_projections, projection_named
from projections.registry import Generation
from projections.runner import GenerationRunner
from projections.status import ProjectionStatus, statuses
from projections.wakeups import CONTROL_CHANNEL

__all__ = [
    "WORKER_ROLES",
    "OperationError",
    "rebuild",
    "replay",
    "retry",
    "run_worker",
    "skip",
    "status_lines",
]

log = structlog.get_logger(__name__)

REBUILD_BATCH: Final = 2000


class OperationError(Exception):
    """An operator's request that cannot be done; the message says why."""


def _target(settings: Settings) -> PostgresTarget:
    return PostgresTarget.from_url(settings.database_url_value())


def _connect(settings: Settings) -> psycopg.Connection[Any]:
    return connector(_target(settings), name="chronik-cli")()


def _projection(name: str, settings: Settings | None = None) -> Projection:
    """The projection ``name``; with ``settings``, the audit ledger signs its
    checkpoints with the configured keys (a rebuild writes checkpoints too)."""
    signer = checkpoint_signer(settings) if settings is not None else None
    every = settings.audit_checkpoint_every if settings is not None else DEFAULT_CHECKPOINT_EVERY
    found = projection_named(name, signer=signer, checkpoint_every=every)
    if found is None:
        names = ", ".join(p.name for p in all_projections())
        raise OperationError(f"no projection named {name!r} (known: {names})")
    return found


def _notify_runners(conn: psycopg.Connection[Any]) -> None:
    conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(CONTROL_CHANNEL)))


WORKER_ROLES: Final = ("projections", "fanout", "scheduler")


def run_worker(
    settings: Settings,
    stop: threading.Event | None = None,
    *,
    roles: tuple[str, ...] = WORKER_ROLES,
) -> None:
    """Until SIGINT/SIGTERM (or ``stop``): every projection with the sync
    compactor, the fan-out (relay, webhook and notification consumers, webhook
    delivery, email) and the scheduler (scheduled prompts, daily digests).
    ``roles`` runs only some, so they can have processes (cores) of their own."""
    stop = stop or _stop_on_signals()
    setup_tracing(settings, role="worker")
    store = open_event_store(
        _target(settings),
        pool_size=settings.db_pool_size,
        group_commit_max=settings.group_commit_max,
    )
    # First: /metrics answers while the rest starts.
    services: list[Any] = [WorkerMetricsServer(settings, store)]
    if "projections" in roles:
        if not settings.audit_signing_keys:
            log.warning(
                "audit checkpoints will be recorded unsigned: set CHRONIK_AUDIT_SIGNING_KEYS"
            )
        services += [open_projection_worker(settings, store, projections_for(settings))]
        services += [SyncCompactor(settings)]
    if "fanout" in roles:
        services += [Fanout(settings, store)]
    if "scheduler" in roles:
        digests = DigestJob(settings, connector(_target(settings), name="chronik-digests"))
        services += [open_scheduler(settings, store, jobs=[digests])]
    for service in services:
        service.start()
    log.info("worker started", roles=list(roles))
    try:
        stop.wait()
    finally:
        for service in reversed(services):
            service.stop()
        store.close()
        shutdown_tracing()
        log.info("worker stopped")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def status_lines(settings: Settings) -> list[str]:
    with _connect(settings) as conn:
        rows = statuses(conn, all_projections(), head_position(conn))
    lines = [f"{'projection':<12} {'gen':>4} {'ver':>3} {'state':<9} {'position':>10} {'lag':>8}"]
    lines += [_status_line(row) for row in rows]
    return lines


def _status_line(row: ProjectionStatus) -> str:
    line = (
        f"{row.name:<12} {row.generation or '-':>4} {row.version or '-':>3} {row.state:<9} "
        f"{row.position:>10} {row.lag:>8}"
    )
    if row.stalled:
        line += f"  STALLED at {row.stalled_position}: {row.stalled_error}"
    return line


def retry(settings: Settings, name: str) -> str:
    _projection(name)
    with _connect(settings) as conn:
        cleared = registry.retry(conn, name)
        _notify_runners(conn)
    if not cleared:
        raise OperationError(f"{name} is not stalled")
    log.warning("projection retry requested", projection=name, cleared=cleared)
    return f"{name}: retrying from position {cleared[0][1]}"


def skip(settings: Settings, name: str, position: int, reason: str) -> str:
    _projection(name)
    with _connect(settings) as conn:
        try:
            registry.skip(conn, name, position, reason)
        except registry.NotStalled as exc:
            raise OperationError(str(exc)) from None
        _notify_runners(conn)
    # An event that will never be in this read model: say so loudly.
    log.warning("projection event skipped", projection=name, position=position, reason=reason)
    return f"{name}: skipped the event at position {position}; the skip is logged"


def rebuild(settings: Settings, name: str, batch_size: int | None = None) -> str:
    """Builds a new generation beside the live one, then switches readers to it."""
    projection = _projection(name, settings)
    store = open_event_store(_target(settings), pool_size=2)
    try:
        with _connect(settings) as conn:
            generation = registry.create_generation(conn, projection, rebuild=True)
            target = head_position(conn)
            _notify_runners(conn)
        started = time.monotonic()
        done = _build(settings, store_source=StoredEventSource(store), projection=projection,
                      generation=generation, target=target, batch_size=batch_size)  # fmt: skip
    finally:
        store.close()
    elapsed = time.monotonic() - started
    if done.stalled:
        raise OperationError(
            f"{name}: the rebuild stalled at position {done.stalled_position}: "
            f"{done.stalled_error}; fix it, then `chronik projections retry {name}`"
        )
    rate = done.applied_events / elapsed if elapsed else 0.0
    return (
        f"{name}: generation {generation.id} now serves reads at position {done.position}; "
        f"{done.applied_events} events applied in {elapsed:.1f} s ({rate:,.0f} events/s)"
    )


def replay(
    settings: Settings, batch_size: int | None = None, say: Callable[[str], None] = print
) -> None:
    """Rebuilds every replayable projection from the log, one after another,
    each beside its live generation (reads keep answering) and then switched.

    A projection whose class says ``replayable = False`` (the tamper-evident
    audit ledger) is skipped: rebuilding it is a deliberate, single act
    (``chronik projections rebuild NAME``), never a side effect of this one.
    A rebuild that stalls leaves that projection's live generation serving
    and the others are still rebuilt; the failures are reported at the end.
    """
    # Reach the database once first: an unreachable one is then one clear
    # error (psycopg's), not a pool timeout inside the first rebuild.
    _connect(settings).close()
    failed: list[str] = []
    for projection in all_projections():
        if not getattr(projection, "replayable", True):
            say(f"{projection.name}: skipped, not replayable (replay never rebuilds it)")
            continue
        try:
            say(rebuild(settings, projection.name, batch_size))
        except OperationError as exc:
            say(str(exc))
            failed.append(projection.name)
    if failed:
        raise OperationError(f"replay incomplete: {', '.join(failed)} did not finish rebuilding")


def _build(
    settings: Settings,
    *,
    store_source: StoredEventSource,
    projection: Projection,
    generation: Generation,
    target: int,
    batch_size: int | None,
) -> Generation:
    connect = connector(_target(settings), name="chronik-rebuild")
    bar = tqdm(
        total=target, initial=generation.position, unit="pos", unit_scale=True,
        desc=f"rebuilding {projection.name}", file=sys.stderr, dynamic_ncols=True,
    )  # fmt: skip

    def advanced(done: Generation) -> None:
        bar.update(max(min(done.position, target) - bar.n, 0))

    runner = GenerationRunner(
        projection,
        generation.id,
        connect=connect,
        source=store_source,
        config=runner_config(settings, batch_size=batch_size or REBUILD_BATCH),
        wake=threading.Event(),
        stopping=threading.Event(),
        on_batch=advanced,
        until_caught_up=True,
    )
    try:
        runner.run()
    finally:
        bar.close()
    with connect() as conn:
        final = registry.load(conn, generation.id)
    assert final is not None
    return final
