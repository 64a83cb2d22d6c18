"""The event store: the eventsourcing library's PostgreSQL persistence, wired
from our settings. Its notification id is Chronik's one global position."""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from typing import Any, ClassVar, TypeVar
from uuid import UUID

import psycopg
import structlog
from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
    Repository,
)
from eventsourcing.domain import MutableOrImmutableAggregate
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    Mapper,
    OperationalError,
    PersistenceError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import get_topic, retry
from psycopg.rows import DictRow, RowMaker, tuple_row
from psycopg_pool import PoolTimeout
from pydantic import BaseModel

from aggregates.base import Aggregate, EventMetadata
from aggregates.team import Team
from commands.locks import KeyedLocks
from commands.ports import Conflict, StoredResponse, Unavailable
from commands.records import CommandRecord
from infra import tracing
from infra.aggregate_freshness import AggregateFreshness
from infra.command_records import write_records
from infra.db import PostgresTarget, reconnect_steadily
from infra.group_commit import GroupCommitter
from infra.serialization import OrjsonTranscoder, PydanticMapper
from projections.base import LoggedEvent

__all__ = [
    "DEFAULT_GROUP_COMMIT_MAX",
    "EVENTS_TABLE",
    "FRESHNESS_READER",
    "SNAPSHOTS_TABLE",
    "TEAM_SNAPSHOT_INTERVAL",
    "EventStore",
    "head_position",
    "open_event_store",
]

APPLICATION_NAME = "Chronik"
# Every request loads its team (keys, roles), and a cache miss replays it from
# the newest snapshot: at most this many events. Teams only: other aggregates
# stay short, and a quota's month ends.
TEAM_SNAPSHOT_INTERVAL = 100
# Commands appended in one transaction at most (1: each its own transaction,
# the library's own path).
DEFAULT_GROUP_COMMIT_MAX = 64  # as Settings.group_commit_max
_log = structlog.get_logger(__name__)
_LOAD_LOCKS = KeyedLocks()
EVENTS_TABLE = "chronik_events"
# The application_name of each API process's freshness reader (pg_stat_activity).
FRESHNESS_READER = "chronik-aggregate-freshness"
# The library names it "<application name>_snapshots"; migration 0005 makes it.
SNAPSHOTS_TABLE = "chronik_snapshots"
A = TypeVar("A", bound=Aggregate)

SELECT_IDEMPOTENT_RESPONSE = """
SELECT request_fingerprint, status_code, response FROM idempotency_records
WHERE team_id = %s AND idempotency_key = %s
"""
SELECT_TEAM_OF_KEY = "SELECT team_id FROM api_key_index WHERE key_id = %s"
# The newest position in the log (0 when empty): projection lag, progress, metrics.
SELECT_HEAD_POSITION = "SELECT coalesce(max(notification_id), 0) FROM chronik_events"
# The library's select_notifications (exclusive of the start), as plain rows.
SELECT_LOG_AFTER = """
SELECT notification_id, originator_id, originator_version, topic, state FROM chronik_events
WHERE notification_id > %s ORDER BY notification_id LIMIT %s
"""


def _logged_events(cursor: psycopg.Cursor[Any]) -> RowMaker[LoggedEvent]:
    return LoggedEvent._make


class ChronikRecorder(PostgresApplicationRecorder):
    """The library's recorder, plus the command's own records written in the
    same transaction, after the events (so they can carry the positions)."""

    def _fetch_ids_after_insert_events(
        self, curs: psycopg.Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        positions = list(super()._fetch_ids_after_insert_events(curs, stored_events) or [])
        records: Sequence[CommandRecord] = kwargs.get("records", ())
        if records:
            write_records(curs, records)
        return positions


class EventStore(Application[UUID]):
    """Loads aggregates and saves their pending events, stamped with who caused them."""

    name = APPLICATION_NAME
    # Read by save() below, not by the library's own hook (see _take_snapshots).
    snapshotting_intervals: ClassVar[dict[type[MutableOrImmutableAggregate[Any]], int]] = {
        Team: TEAM_SNAPSHOT_INTERVAL
    }

    def __init__(
        self,
        env: dict[str, str],
        *,
        group_commit_max: int = DEFAULT_GROUP_COMMIT_MAX,
        freshness: AggregateFreshness | None = None,
    ) -> None:
        super().__init__(env=env)
        self._committer = (
            GroupCommitter(self.recorder_, max_batch=group_commit_max)
            if group_commit_max > 1
            else None
        )
        # Without it, every load of a cached aggregate asks for newer events.
        self._freshness = freshness
        if freshness is not None:
            freshness.start()

    def construct_transcoder(self) -> Transcoder:
        return OrjsonTranscoder()

    def construct_mapper(self) -> Mapper[UUID]:
        return PydanticMapper(transcoder=self.construct_transcoder())

    @property
    def recorder_(self) -> ChronikRecorder:
        recorder = self.recorder
        assert isinstance(recorder, ChronikRecorder)
        return recorder

    def construct_repository(self) -> Repository[UUID]:
        repository = super().construct_repository()
        # Only some types are snapshotted; looking for a snapshot before every
        # other load doubled the cost of a miss (a new id's existence check:
        # ~0.5 ms -> ~1 ms). Same cache, so both see the same cached aggregates.
        self._events_only: Repository[UUID] = Repository(
            event_store=self.events,
            fastforward=repository.fastforward,
            deepcopy_from_cache=repository.deepcopy_from_cache,
        )
        self._events_only.cache = repository.cache
        return repository

    def _repository_for(self, cls: type[Aggregate]) -> Repository[UUID]:
        snapshotted = any(issubclass(cls, t) for t in self.snapshotting_intervals)
        return self.repository if snapshotted else self._events_only

    def get(self, aggregate_id: UUID, cls: type[A]) -> A | None:
        try:
            # The library's cache fast-forwards a cached aggregate under its lock
            # but copies it outside it: two threads loading one aggregate at once
            # could copy it mid-update ("dictionary changed size"). One lock per
            # aggregate id serialises exactly those loads.
            with _LOAD_LOCKS.held(aggregate_id):
                aggregate = self._current_copy(aggregate_id)
                if aggregate is None:
                    aggregate = self._load(aggregate_id, self._repository_for(cls))
        except AggregateNotFoundError:
            return None
        except (OperationalError, PoolTimeout) as exc:
            raise Unavailable(str(exc)) from exc
        return aggregate if isinstance(aggregate, cls) else None

    def get_if_current(self, aggregate_id: UUID, cls: type[A]) -> A | None:
        # Never waits: the caller is an event loop (see api.dependencies.signed_in).
        lock = _LOAD_LOCKS.lock(aggregate_id)
        if not lock.acquire(blocking=False):
            return None
        try:
            aggregate = self._current_copy(aggregate_id)
        finally:
            lock.release()
        return aggregate if isinstance(aggregate, cls) else None

    @property
    def freshness(self) -> AggregateFreshness | None:
        return self._freshness

    def _current_copy(self, aggregate_id: UUID) -> Aggregate | None:
        """A copy of the cached aggregate, when it is known to be current."""
        if self._freshness is None or self.repository.cache is None:
            return None
        try:
            cached = self.repository.cache.get(aggregate_id)
        except KeyError:
            return None
        if not isinstance(cached, Aggregate):
            return None
        if not self._freshness.is_current(aggregate_id, cached.version):
            return None
        return deepcopy(cached)

    def _load(self, aggregate_id: UUID, repository: Repository[UUID]) -> Aggregate:
        """From the database: the cached copy brought up to date, or replayed."""
        if self._freshness is None:
            loaded: Aggregate = repository.get(aggregate_id)
            return loaded
        mark = self._freshness.mark()
        loaded = repository.get(aggregate_id)
        self._freshness.loaded(aggregate_id, mark)
        return loaded

    def _doubt(self, aggregates: Sequence[Aggregate]) -> None:
        """A lost race: the cached copies may be behind; the retry loads them."""
        if self._freshness is not None:
            for aggregate in aggregates:
                self._freshness.doubt(aggregate.id)

    def _remember_saved(
        self,
        aggregates: Sequence[Aggregate],
        events: Sequence[Aggregate.Event],
        positions: Sequence[int],
    ) -> None:
        """Caches copies of the aggregates this process just appended events of
        (the next command on them needs no query), never over a newer cached
        version. Only those: the append checked their versions, not the others'."""
        cache = self.repository.cache
        if self._freshness is None or cache is None or not positions:
            return
        last = positions[-1]
        appended = {event.originator_id for event in events}
        for aggregate in aggregates:
            if aggregate.id not in appended:
                continue
            with _LOAD_LOCKS.held(aggregate.id):
                try:
                    newer = cache.get(aggregate.id).version >= aggregate.version
                except KeyError:
                    newer = False
                if not newer:
                    # A copy: the caller still holds the aggregate it decided on.
                    cache.put(aggregate.id, deepcopy(aggregate))
                    self._freshness.saved(aggregate.id, last)

    def save(  # type: ignore[override]
        self,
        aggregates: Sequence[Aggregate],
        *,
        metadata: EventMetadata,
        records: Sequence[CommandRecord] = (),
    ) -> list[int]:
        """Append every pending event of ``aggregates``, and ``records``, in one
        transaction. Events are immutable, so the metadata is stamped on copies;
        the copies are what is stored."""
        pending = [e for a in aggregates for e in a.collect_events()]
        if not pending:
            return []
        if not tracing.enabled():
            return self._stamp_and_append(aggregates, pending, metadata, records)
        with tracing.tracer().start_as_current_span(
            "event_store append", attributes={"chronik.events": len(pending)}
        ) as span:
            if span.is_recording():
                # Later stages (projections, relay, deliveries) continue this span.
                metadata = metadata.model_copy(update={"traceparent": tracing.traceparent_of()})
            positions = self._stamp_and_append(aggregates, pending, metadata, records)
            span.set_attribute("chronik.position", positions[-1])
        return positions

    def _stamp_and_append(
        self,
        aggregates: Sequence[Aggregate],
        pending: Sequence[object],
        metadata: EventMetadata,
        records: Sequence[CommandRecord],
    ) -> list[int]:
        events: list[Aggregate.Event] = []
        for event in pending:
            assert isinstance(event, Aggregate.Event)
            events.append(event.model_copy(update={"metadata": metadata}))
        try:
            positions = self._append(events, records)
        except IntegrityError as exc:
            self._doubt(aggregates)
            raise Conflict(str(exc)) from exc
        except Conflict:  # the group committer's answer for this command alone
            self._doubt(aggregates)
            raise
        except (OperationalError, PoolTimeout) as exc:
            raise Unavailable(str(exc)) from exc
        self._snapshot_due(aggregates, events)
        self._remember_saved(aggregates, events, positions)
        return positions

    def _append(
        self, events: Sequence[Aggregate.Event], records: Sequence[CommandRecord]
    ) -> list[int]:
        if self._committer is None:
            return [r.notification.id for r in super().save(*events, records=records)]
        stored = [self.mapper.to_stored_event(e) for e in events]
        return self._committer.append(stored, records)

    def close(self) -> None:
        if self._freshness is not None:
            self._freshness.stop()
        if self._committer is not None:
            self._committer.close()
        super().close()

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        """The library's hook, called inside ``super().save``: it finds no
        aggregates there (we save stamped event copies), and it would let a failed
        snapshot fail the command. ``_snapshot_due`` does the work instead."""

    def _snapshot_due(self, aggregates: Sequence[Aggregate], events: Sequence[BaseModel]) -> None:
        """Snapshots each aggregate at every multiple of its interval that this
        save reached, after the commit. A snapshot only saves replay time, so a
        failure is logged and the command that was just committed still succeeds."""
        intervals = {a.id: self.snapshotting_intervals.get(type(a)) for a in aggregates}
        for pending in events:
            assert isinstance(pending, Aggregate.Event)
            interval = intervals.get(pending.originator_id)
            if interval is None or pending.originator_version % interval:
                continue
            try:
                self.take_snapshot(pending.originator_id, version=pending.originator_version)
            except Exception:  # noqa: BLE001 - whatever failed, the events are committed
                _log.warning(
                    "snapshot failed; loads replay more events until the next one",
                    aggregate_id=str(pending.originator_id),
                    version=pending.originator_version,
                    exc_info=True,
                )

    def head_position(self) -> int:
        return int(self._query_one(SELECT_HEAD_POSITION, ()))

    # As the library's select_notifications: a pooled connection broken by a
    # database restart is not pinged first (POSTGRES_PRE_PING), so try another.
    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def read_log(self, after: int, limit: int) -> list[LoggedEvent]:
        """Up to ``limit`` events after position ``after``, in order. What the
        library's ``select_notifications`` reads, as tuples made straight from
        the rows: a projection's rebuild reads every event (bench B3). In binary,
        so neither side hex-codes the states: 200,000 events read in 0.35 s of
        this process's CPU instead of 0.95 s. Raises the library's persistence
        errors, as it does."""
        with (
            self.recorder_.datastore.get_connection() as conn,
            conn.cursor(row_factory=_logged_events) as cur,
        ):
            cur.execute(SELECT_LOG_AFTER, (after, limit), prepare=True, binary=True)
            return cur.fetchall()

    def find_idempotent_response(self, team_id: UUID, key: str) -> StoredResponse | None:
        row = self._query_row(SELECT_IDEMPOTENT_RESPONSE, (team_id, key))
        if row is None:
            return None
        return StoredResponse(row["request_fingerprint"], row["status_code"], row["response"])

    def team_of_key(self, key_id: str) -> UUID | None:
        team_id: UUID | None = self._query_one(SELECT_TEAM_OF_KEY, (key_id,))
        return team_id

    def _query_row(self, query: str, params: tuple[Any, ...]) -> DictRow | None:
        try:
            with self.recorder_.datastore.get_connection() as conn:
                return conn.execute(query.encode(), params).fetchone()
        except (PersistenceError, PoolTimeout) as exc:
            raise Unavailable(str(exc)) from exc

    def _query_one(self, query: str, params: tuple[Any, ...]) -> Any:
        row = self._query_row(query, params)
        return None if row is None else next(iter(row.values()))


def head_position(conn: psycopg.Connection[Any]) -> int:
    """The newest position, read on ``conn`` (a pooled or dedicated connection)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(SELECT_HEAD_POSITION).fetchone()
    return int(row[0]) if row else 0


def library_env(target: PostgresTarget, *, pool_size: int) -> dict[str, str]:
    """The library reads its configuration from a mapping; we build it from settings."""
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "APPLICATION_RECORDER_TOPIC": get_topic(ChronikRecorder),
        "POSTGRES_HOST": target.host,
        "POSTGRES_PORT": str(target.port),
        "POSTGRES_USER": target.user,
        "POSTGRES_PASSWORD": target.password,
        "POSTGRES_DBNAME": target.dbname,
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(pool_size),
        # How long a query waits for a pooled connection (not libpq's connect
        # timeout). The library tries a read 10 times, so while the database
        # is down a command answers 503 after ~12 s instead of ~50 s.
        "POSTGRES_CONNECT_TIMEOUT": "1",
        "POSTGRES_LOCK_TIMEOUT": "5",
        # No round trip to test each connection before use (~10% of a command's
        # cost, bench B1): a connection a database restart broke fails its query,
        # the pool discards it, and the library's reads and the group committer
        # try again on another (tests/e2e/test_database_outage.py).
        "POSTGRES_PRE_PING": "n",
        # Tables come from our numbered migrations, never from the library.
        "CREATE_TABLE": "n",
        # Never the DB-function insert path: it skips the table lock, and tailing
        # readers could then pass over events committed out of order.
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        # Loaded aggregates stay cached and are brought up to date with one
        # query for newer events; callers get deep copies.
        "AGGREGATE_CACHE_MAXSIZE": "2000",
        "AGGREGATE_CACHE_FASTFORWARD": "y",
        # Snapshots of the aggregates in EventStore.snapshotting_intervals, kept in
        # chronik_snapshots; loads start from the newest one at or before the version.
        "IS_SNAPSHOTTING_ENABLED": "y",
    }


def open_event_store(
    target: PostgresTarget,
    *,
    pool_size: int,
    group_commit_max: int = DEFAULT_GROUP_COMMIT_MAX,
    follow_changes: bool = False,
) -> EventStore:
    """``follow_changes``: a thread that learns from the log which cached
    aggregates are current, so loading those needs no query (infra.aggregate_freshness);
    for processes that serve many commands (the API)."""
    reconnect_steadily()
    freshness = None
    if follow_changes:
        conninfo = target.conninfo()
        freshness = AggregateFreshness(
            lambda: psycopg.connect(
                conninfo, autocommit=True, connect_timeout=5, application_name=FRESHNESS_READER
            ),
            EVENTS_TABLE,
            head=head_position,
        )
    return EventStore(
        env=library_env(target, pool_size=pool_size),
        group_commit_max=group_commit_max,
        freshness=freshness,
    )
