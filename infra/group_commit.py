"""Group commit: the commands that arrive while one append transaction runs
share the next one.

Every append must hold the event table's lock until it commits, so that
positions are handed out in commit order (tailing readers never skip an
event). One transaction per command therefore pays the lock, the round trips
and the WAL flush once per command, serially. Here one thread per process owns
the appends: it takes every command waiting for it, opens one transaction,
locks the table once, NOTIFYs once, gives each command its own SAVEPOINT (a
version conflict or a taken idempotency key rolls back that command alone),
commits once, and then answers each caller with its own positions.

Under no load a command waits for nobody (the thread takes it at once); under
load the batch grows by itself to what arrived during the previous commit.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext
from prometheus_client import Histogram
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from commands.ports import Conflict, Unavailable
from commands.records import CommandRecord, IdempotencyRecorded
from infra import tracing
from infra.command_records import write_records

__all__ = ["APPEND_BATCH_SIZE", "APPEND_SECONDS", "GroupCommitter"]

_log = structlog.get_logger(__name__)

# One SAVEPOINT name reused: each command releases it and opens the next.
START_COMMAND = b"SAVEPOINT command"
RELEASE_COMMAND = b"RELEASE SAVEPOINT command"
UNDO_COMMAND = b"ROLLBACK TO SAVEPOINT command"
APPEND_COMMANDS = b"""
SELECT command, positions, failure FROM chronik_append_commands(
    %s::uuid[], %s::bigint[], %s::text[], %s::bytea[], %s::integer[],
    %s::uuid[], %s::text[], %s::text[], %s::integer[], %s::jsonb[], %s::integer[], %s, %s)
"""
# A batch that fails before its COMMIT is sent (a pooled connection that died,
# the lock not granted in time) is tried again on a fresh connection; a failed
# COMMIT is not, since the server may have committed it.
BATCH_ATTEMPTS = 3
# A caller never waits for ever on a committer that cannot answer.
ANSWER_TIMEOUT = 60.0

APPEND_BATCH_SIZE = Histogram(
    "chronik_event_store_append_batch_commands",
    "Commands appended per event-store transaction (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
APPEND_SECONDS = Histogram(
    "chronik_event_store_append_seconds",
    "Seconds from a command handing its events to the committer to its commit.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


@dataclass(slots=True)
class _Append:
    stored_events: Sequence[StoredEvent]
    records: Sequence[CommandRecord]
    answer: Future[list[int]] = field(default_factory=Future)
    # The command's append span (tracing on): the shared transaction links to it.
    span: SpanContext | None = None


class GroupCommitter:
    """Appends commands' events in shared transactions; see the module docstring."""

    def __init__(self, recorder: PostgresApplicationRecorder, *, max_batch: int) -> None:
        self._recorder = recorder
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Append | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self.transactions = 0  # append transactions run, for tests and reports

    def append(
        self, stored_events: Sequence[StoredEvent], records: Sequence[CommandRecord]
    ) -> list[int]:
        """The positions of ``stored_events``, once committed with ``records``.
        Raises Conflict (this command alone lost a race) or Unavailable."""
        item = _Append(stored_events, records)
        if tracing.enabled():
            item.span = trace.get_current_span().get_span_context()
        started = time.perf_counter()
        self._ensure_running()
        self._queue.put(item)
        try:
            positions = item.answer.result(timeout=ANSWER_TIMEOUT)
        except TimeoutError:
            raise Unavailable("the event store did not answer in time") from None
        APPEND_SECONDS.observe(time.perf_counter() - started)
        return positions

    @property
    def waiting(self) -> int:
        """Commands queued for the next transaction."""
        return self._queue.qsize()

    def close(self) -> None:
        with self._start_lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=ANSWER_TIMEOUT)

    def _ensure_running(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._closed:
                raise Unavailable("the event store is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="chronik-group-commit", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        try:
            self._commit_until_closed()
        finally:
            # A command that raced close() and queued behind the end is told so.
            while True:
                try:
                    late = self._queue.get_nowait()
                except queue.Empty:
                    break
                if late is not None:
                    late.answer.set_exception(Unavailable("the event store is closed"))

    def _commit_until_closed(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            APPEND_BATCH_SIZE.observe(len(batch))
            self.transactions += 1
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Append]) -> None:
        if not tracing.enabled():
            self._answer(batch)
            return
        # One transaction serves many commands (many traces): its span starts a
        # trace of its own and links to each command's append span.
        links = [Link(i.span) for i in batch if i.span is not None and i.span.is_valid]
        with tracing.tracer().start_as_current_span(
            "group_commit transaction",
            links=links,
            attributes={"chronik.batch.commands": len(batch)},
        ):
            self._answer(batch)

    def _answer(self, batch: list[_Append]) -> None:
        try:
            outcomes = self._write_with_retries(batch)
        except BaseException as exc:  # noqa: BLE001 - every caller must hear of it
            failure = exc if isinstance(exc, Unavailable) else Unavailable(str(exc))
            _log.warning("append batch failed", commands=len(batch), error=str(exc))
            for item in batch:
                item.answer.set_exception(failure)
            return
        for item, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):
                item.answer.set_exception(outcome)
            else:
                item.answer.set_result(outcome)

    def _write_with_retries(self, batch: list[_Append]) -> list[list[int] | Exception]:
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            try:
                return self._write(batch)
            except _BeforeCommit as failure:
                if attempt == BATCH_ATTEMPTS:
                    raise Unavailable(str(failure.__cause__)) from failure.__cause__
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _write(self, batch: list[_Append]) -> list[list[int] | Exception]:
        if all(isinstance(r, IdempotencyRecorded) for item in batch for r in item.records):
            return self._write_in_one_statement(batch)
        return self._write_in_one_pipeline(batch)

    def _write_in_one_statement(self, batch: list[_Append]) -> list[list[int] | Exception]:
        """The common batch (events, idempotency records): one statement, its
        own transaction, so the table lock is held only while the server works.
        If it fails, whether it committed is not known, unless the server says
        it never got the lock."""
        datastore = self._recorder.datastore
        params = (*_append_parameters(batch), datastore.lock_timeout)
        with datastore.get_connection() as conn:
            try:
                rows = conn.execute(APPEND_COMMANDS, params).fetchall()
            except psycopg.errors.LockNotAvailable as exc:
                raise _BeforeCommit() from exc
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                raise Unavailable(f"append failed, outcome unknown: {exc}") from exc
        by_command = {row["command"]: row for row in rows}
        outcomes: list[list[int] | Exception] = []
        for number in range(1, len(batch) + 1):
            row = by_command.get(number)
            if row is None:
                outcomes.append(Unavailable("append gave no outcome for this command"))
            elif row["failure"] is not None:
                outcomes.append(Conflict(row["failure"]))
            else:
                outcomes.append(list(row["positions"]))
        return outcomes

    def _write_in_one_pipeline(self, batch: list[_Append]) -> list[list[int] | Exception]:
        """Any batch (records of every kind): one pipeline, a SAVEPOINT each."""
        # The library's pooled connections are in autocommit mode: the
        # transaction is spelled out, so a failed COMMIT can be told apart.
        with self._recorder.datastore.get_connection() as conn:
            try:
                with conn.pipeline() as pipeline:
                    outcomes = self._statements(conn, pipeline, batch)
                if conn.info.transaction_status != TransactionStatus.INTRANS:
                    raise psycopg.InternalError("the append transaction was aborted")
            except BaseException as exc:
                with contextlib.suppress(psycopg.Error):
                    conn.execute(b"ROLLBACK")
                if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                    raise _BeforeCommit() from exc
                raise
            try:
                committed = conn.execute(b"COMMIT").statusmessage == "COMMIT"
            except psycopg.Error as exc:
                raise Unavailable(f"commit failed, outcome unknown: {exc}") from exc
            if not committed:
                raise Unavailable("the append transaction was rolled back")
        return outcomes

    def _statements(
        self, conn: psycopg.Connection[Any], pipeline: psycopg.Pipeline, batch: list[_Append]
    ) -> list[list[int] | Exception]:
        """Sends the whole batch in one pipeline, so the table lock is held for
        about one round trip rather than several per command (each of which
        also waits for this thread to get the GIL back from the request
        threads). A command that fails makes the server skip the rest; the
        failed one is undone to its SAVEPOINT and the rest are sent again."""
        recorder = self._recorder
        with conn.cursor() as curs:
            curs.execute(b"BEGIN")
            recorder._lock_table(curs)  # the library's own lock statements
            recorder._notify_channel(curs)
            curs.execute(START_COMMAND)
        outcomes: list[list[int] | Exception | None] = [None] * len(batch)
        todo = list(range(len(batch)))
        while todo:
            sent: list[tuple[int, psycopg.Cursor[Any], psycopg.Cursor[Any]]] = []
            failure: psycopg.Error | None = None
            try:
                for i in todo:
                    sent.append((i, *self._send(conn, batch[i])))
                pipeline.sync()
            except (psycopg.OperationalError, psycopg.InterfaceError):
                raise
            except psycopg.Error as exc:
                # Raised by sync(), or by a send that found the error's result
                # already in: the rest of this round was skipped or never sent.
                failure = exc
                with contextlib.suppress(psycopg.errors.PipelineAborted):
                    pipeline.sync()
            unsent = todo[len(sent) :]
            released = [r.statusmessage is not None for _, _, r in sent]
            failed_at = released.index(False) if not all(released) else len(sent)
            for i, insert, _ in sent[:failed_at]:
                outcomes[i] = [row["notification_id"] for row in insert.fetchall()]
            if failure is None:
                break
            # Results come in order: the command that failed is the first whose
            # SAVEPOINT was not released, or, if the error came back while a
            # command was being sent, that one. It alone is undone (a unique
            # violation: version, id or idempotency key); those after it go again.
            rest = [i for i, _, _ in sent[failed_at:]] + unsent
            if not rest:
                raise failure
            outcomes[rest[0]] = (
                Conflict(str(failure)) if isinstance(failure, psycopg.IntegrityError) else failure
            )
            conn.execute(UNDO_COMMAND)
            pipeline.sync()
            todo = rest[1:]
        return [o if o is not None else psycopg.InternalError("not sent") for o in outcomes]

    def _send(
        self, conn: psycopg.Connection[Any], item: _Append
    ) -> tuple[psycopg.Cursor[Any], psycopg.Cursor[Any]]:
        """Queues one command: its events, its records, then a new SAVEPOINT.
        Returns the insert's cursor (the positions) and the one that releases
        the command's SAVEPOINT (has a status only if all of it ran)."""
        recorder = self._recorder
        rows = [
            recorder.construct_pg_stored_event(
                e.originator_id, e.originator_version, e.topic, e.state
            )
            for e in item.stored_events
        ]
        insert = conn.cursor()
        insert.execute(recorder.insert_events_statement, (rows,))
        write_records(conn.cursor(), item.records)
        released = conn.cursor()
        released.execute(RELEASE_COMMAND)
        conn.execute(START_COMMAND)
        return insert, released


def _append_parameters(batch: list[_Append]) -> tuple[Any, ...]:
    """The columns ``chronik_append_commands`` takes, each a list, and the count."""
    columns: tuple[list[Any], ...] = tuple([] for _ in range(11))
    ids, versions, topics, states, event_commands = columns[:5]
    teams, keys, fingerprints, statuses, responses, idempotency_commands = columns[5:]
    for number, item in enumerate(batch, start=1):
        for stored in item.stored_events:
            ids.append(stored.originator_id)
            versions.append(stored.originator_version)
            topics.append(stored.topic)
            states.append(stored.state)
            event_commands.append(number)
        for record in item.records:
            assert isinstance(record, IdempotencyRecorded)
            teams.append(record.team_id)
            keys.append(record.idempotency_key)
            fingerprints.append(record.request_fingerprint)
            statuses.append(record.status_code)
            responses.append(Jsonb(record.response))
            idempotency_commands.append(number)
    return (*columns, len(batch))


class _BeforeCommit(Exception):
    """The batch failed before its COMMIT was sent: nothing of it is stored."""
