"""The batch runner: applies the event log to one generation of a projection.

Each batch is read after the generation's tracked position, applied with
set-based SQL and its new position recorded in one transaction, so a runner
killed at any instant leaves every event applied exactly once. One runner per
generation is active across all processes (a session advisory lock on its own
connection); the others stand by and take over when that connection dies.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

import orjson
import psycopg
import structlog
from opentelemetry.trace import (
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanKind,
    StatusCode,
    get_tracer,
    get_tracer_provider,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from psycopg import sql
from psycopg.rows import dict_row

from aggregates.base import DomainEvent
from projections import registry
from projections.base import Decode, LoggedEvent, Projection
from projections.read_ahead import ReadAhead
from projections.registry import Generation, LostOwnership

__all__ = ["EventSource", "GenerationRunner", "RunnerConfig", "SourceUnavailable"]

log = structlog.get_logger(__name__)


class SourceUnavailable(Exception):
    """The event log cannot be read right now (the database is down)."""


LOCK_CLASS: Final = 0x7072  # advisory lock (class, generation id) of the active runner
TRANSIENT: Final = (psycopg.OperationalError, psycopg.InterfaceError, SourceUnavailable)
Connect = Callable[[], psycopg.Connection[Any]]
_TRACER: Final = get_tracer("chronik.projections")
_W3C: Final = TraceContextTextMapPropagator()
_UNTRACED: Final = (ProxyTracerProvider, NoOpTracerProvider)
_NO_FSYNC_WAIT: Final = "SET LOCAL synchronous_commit = off"
# Events applied before a runner that catches up analyses its tables itself.
ANALYZE_AFTER_EVENTS: Final = 10_000
# The key the append stores each event's trace context under (in its metadata).
_TRACEPARENT: Final = b'"traceparent"'


class EventSource(Protocol):
    """The event log as runners read it (the library's notification log)."""

    def read(self, after: int, limit: int) -> Sequence[LoggedEvent]: ...

    def decode(self, notification: LoggedEvent) -> DomainEvent: ...


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    batch_size: int = 500
    # NOTIFY wakes runners at once; this is the fallback if one is missed.
    poll_interval: float = 1.0
    # How often a standby tries to become the active runner.
    standby_interval: float = 1.0


class GenerationRunner:
    def __init__(
        self,
        projection: Projection,
        generation_id: int,
        *,
        connect: Connect,
        source: EventSource,
        config: RunnerConfig,
        wake: threading.Event,
        stopping: threading.Event,
        on_batch: Callable[[Generation], None] | None = None,
        until_caught_up: bool = False,
    ) -> None:
        self.projection = projection
        self.generation_id = generation_id
        self._connect = connect
        self._source = source
        self._config = config
        self._wake = wake
        self._stopping = stopping
        self._on_batch = on_batch
        self._until_caught_up = until_caught_up
        self.active = threading.Event()  # set while this runner holds the lock
        self._analyzed_at: int | None = None  # the position its tables were analysed at
        self._unanalysed = 0  # events applied since
        self._log = log.bind(projection=projection.name, generation=generation_id)

    def run(self) -> None:
        """Until the generation is retired (or, with ``until_caught_up``, serves
        reads and has reached the head, or has stalled), or ``stopping`` is set."""
        delay = 0.5
        while not self._stopping.is_set():
            try:
                with self._connect() as conn:
                    if self._stand_by_until_locked(conn) and self._run_locked(conn):
                        return
                delay = 0.5
            except TRANSIENT as exc:
                self._log.warning("projection runner lost the database", error=str(exc))
                self._stopping.wait(delay)
                delay = min(delay * 2, 5.0)
            finally:
                self.active.clear()

    def _stand_by_until_locked(self, conn: psycopg.Connection[Any]) -> bool:
        lock = "SELECT pg_try_advisory_lock(%s, %s)"
        while not self._stopping.is_set():
            row = conn.execute(lock, (LOCK_CLASS, self.generation_id)).fetchone()
            if row is not None and row[0]:
                schema = sql.Identifier(registry.schema_of(self.generation_id))
                conn.execute(sql.SQL("SET search_path TO {}, public").format(schema))
                self.active.set()
                self._log.info("projection runner is active")
                return True
            self._stopping.wait(self._config.standby_interval)
        return False

    def _run_locked(self, conn: psycopg.Connection[Any]) -> bool:
        """True when there is nothing more for this runner to do."""
        ahead = ReadAhead(
            self._source.read, self._source.decode, topics=self.projection.topics,
            limit=self._config.batch_size, name=self.projection.name,
        )  # fmt: skip
        try:
            return self._run_batches(conn, ahead)
        finally:
            ahead.close()

    def _run_batches(self, conn: psycopg.Connection[Any], ahead: ReadAhead) -> bool:
        while not self._stopping.is_set():
            generation = registry.load(conn, self.generation_id)
            if generation is None or generation.state == "retired":
                self._log.info("projection generation retired")
                return True
            if self._until_caught_up and generation.stalled:
                return True
            if generation.stalled:
                self._sleep()
                continue
            self._wake.clear()
            batch, decode = ahead.read(generation.position)
            if batch:
                try:
                    self._apply_traced(conn, generation, batch, decode)
                except LostOwnership:
                    continue
            elif generation.state == "building":
                if not self._activate(conn, generation):
                    self._sleep()
            else:
                self._analyze_when_grown(conn, generation)
                if self._until_caught_up:
                    return True
                self._sleep()
        return False

    def _sleep(self) -> None:
        self._wake.wait(self._config.poll_interval)

    def _apply_traced(
        self,
        conn: psycopg.Connection[Any],
        generation: Generation,
        batch: Sequence[LoggedEvent],
        decode: Decode,
    ) -> None:
        """``_apply``, with a span (tracing on) in each trace the batch continues.
        Not while the generation is built (a rebuild replays history: its
        commands' traces ended long ago, and it would flood the collector)."""
        traced = generation.state != "building" and _tracing_on()
        spans = _event_spans(self.projection.name, batch) if traced else []
        try:
            self._apply(conn, generation, batch, decode)
        except BaseException as exc:
            for span in spans:
                span.record_exception(exc)
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                span.end()
            raise
        for span in spans:
            span.end()

    def _apply(
        self,
        conn: psycopg.Connection[Any],
        generation: Generation,
        batch: Sequence[LoggedEvent],
        decode: Decode,
    ) -> None:
        try:
            self._commit(conn, generation, batch, decode)
        except (*TRANSIENT, LostOwnership):
            raise
        except Exception as exc:  # noqa: BLE001 - a handler error: find the event, stall there
            if self._isolate(conn, generation, batch, decode):
                # Every event applied alone: what failed was the batch's own
                # write path (a large batch's COPY), which operators should see.
                self._log.warning(
                    "a batch failed whole but applied event by event",
                    positions=f"{batch[0].id}..{batch[-1].id}",
                    error=f"{type(exc).__name__}: {exc}",
                )

    def _commit(
        self,
        conn: psycopg.Connection[Any],
        generation: Generation,
        batch: Sequence[LoggedEvent],
        decode: Decode,
    ) -> Generation:
        with conn.transaction():
            if generation.state == "building" and not self.projection.durable_commits:
                # No reader sees a generation being built, and its activation
                # commits durably, flushing every batch before it: a batch lost
                # in a crash is simply built again. Live batches wait for the
                # disk, since readers are told each position they reach.
                conn.execute(_NO_FSYNC_WAIT)
            with conn.cursor(row_factory=dict_row) as cur:
                applied = self.projection.apply_batch(cur, batch, decode)
            registry.advance(conn, generation, batch[-1].id, applied)
        self._unanalysed += applied
        done = replace(
            generation, position=batch[-1].id, applied_events=generation.applied_events + applied
        )
        if self._on_batch is not None:
            self._on_batch(done)
        return done

    def _isolate(
        self,
        conn: psycopg.Connection[Any],
        generation: Generation,
        batch: Sequence[LoggedEvent],
        decode: Decode,
    ) -> bool:
        """Apply the batch one event at a time: the events before the bad one
        are kept, the bad one stops the generation, nothing is skipped.
        True when every event applied."""
        for notification in batch:
            try:
                generation = self._commit(conn, generation, [notification], decode)
            except (*TRANSIENT, LostOwnership):
                raise
            except Exception as exc:  # noqa: BLE001 - recorded, shown to operators
                error = f"{type(exc).__name__}: {exc}"
                registry.stall(conn, generation, notification.id, error)
                self._log.error(
                    "projection stalled", position=notification.id, topic=notification.topic,
                    error=error,
                )  # fmt: skip
                return False
        return True

    def _analyze_when_grown(self, conn: psycopg.Connection[Any], generation: Generation) -> None:
        """Having caught up after many events (a first generation, which serves
        reads as it is built; a worker back from downtime): freshly written
        tables have no statistics until autovacuum comes round, and meanwhile
        the planner guesses (a sync page read took 35-70 ms instead of under
        1 ms, bench B4)."""
        if self._unanalysed >= ANALYZE_AFTER_EVENTS:
            registry.analyze(conn, self.projection, generation)
            self._unanalysed = 0

    def _activate(self, conn: psycopg.Connection[Any], generation: Generation) -> bool:
        if self._analyzed_at != generation.position:
            # Before readers see it, however small; once per position reached,
            # not per attempt.
            registry.analyze(conn, self.projection, generation)
            self._analyzed_at, self._unanalysed = generation.position, 0
        activated = registry.try_activate(conn, self.projection, generation)
        if activated is None:
            return False
        self._log.info("projection generation now serves reads", position=generation.position)
        if activated.previous is not None:
            try:
                conn.execute("SET lock_timeout = '10s'")
                registry.drop_schema(conn, activated.previous.id)
            except psycopg.errors.LockNotAvailable:
                self._log.warning("old generation still in use; dropped later")
            finally:
                conn.execute("SET lock_timeout = 0")
        return True


def _tracing_on() -> bool:
    """Whether this process installed a tracer provider (infra.tracing): until
    then the API's proxy stands in, and the batch is read for no trace."""
    return not isinstance(get_tracer_provider(), _UNTRACED)


def _event_spans(projection: str, batch: Sequence[LoggedEvent]) -> list[Span]:
    """One span per trace the batch's events continue (a command's events
    share one), started now and ended once the batch is committed: the events
    are applied together, set-based, so that is when each was applied."""
    positions: dict[str, list[int]] = {}
    for notification in batch:
        # Most events of a busy log are untraced: skip them without parsing.
        if _TRACEPARENT not in notification.state:
            continue
        traceparent = _traceparent_of(notification.state)
        if traceparent is not None:
            positions.setdefault(traceparent, []).append(notification.id)
    return [
        _TRACER.start_span(
            f"projection {projection}",
            context=_W3C.extract({"traceparent": traceparent}),
            kind=SpanKind.CONSUMER,
            attributes={
                "chronik.projection": projection,
                "chronik.positions": ids,
                "chronik.batch.events": len(batch),
            },
        )
        for traceparent, ids in positions.items()
    ]


def _traceparent_of(state: bytes) -> str | None:
    try:
        decoded = orjson.loads(state)
    except orjson.JSONDecodeError:
        return None
    metadata = decoded.get("metadata") if isinstance(decoded, dict) else None
    value = metadata.get("traceparent") if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else None
