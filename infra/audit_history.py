"""Per-aggregate audit reads, straight from the event store (never from read
tables): one aggregate's events with their metadata, and its state as it was at
a version or a time, rebuilt by the library's repository.

Who may see what is decided here, once, for both reads. An aggregate of another
team does not exist for the reader. A journal entry's event is visible to a
reader when the entry is the team's as of that event, or when the reader wrote
it: the event feed's ``visible_to`` rule (the event that makes an entry private
is already private, the one that makes it the team's again is not). Visibility
only changes with an entry's Created and VisibilityChanged events, so those
few give the version ranges a reader may see, and pages read only those ranges.

Where a reader cannot see an entry's latest version, no answer tells how many
versions it has: a version past the latest answers as a hidden one does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from psycopg import Connection
from psycopg.rows import DictRow
from psycopg_pool import PoolTimeout

from aggregates.base import Aggregate, DomainEvent
from aggregates.journal_entry import JournalEntry, Visibility
from aggregates.team import Team
from commands.ports import Unavailable
from infra.audit_events import aggregate_type_of, event_item
from infra.audit_state import AGGREGATE_TYPES, state_of
from infra.event_store import EventStore
from projections.base import topic_of
from projections.pagination import InvalidCursor, decode_cursor, encode_cursor
from projections.reading import iso

__all__ = [
    "AuditHistory",
    "HistoryPage",
    "NoSuchVersion",
    "NotVisibleAtVersion",
    "NotYetCreated",
    "StateAt",
    "Stream",
    "entry_ranges",
]

# Every query reads one aggregate's rows by the primary key (originator_id, version).
SELECT_EVENTS: Final = """
SELECT notification_id, originator_version, topic, state FROM chronik_events
WHERE originator_id = %(id)s AND originator_version > %(after)s
  AND originator_version <= %(upto)s
ORDER BY originator_version LIMIT %(limit)s
"""
SELECT_EVENTS_BEFORE: Final = """
SELECT notification_id, originator_version, topic, state FROM chronik_events
WHERE originator_id = %(id)s AND originator_version < %(before)s
ORDER BY originator_version DESC LIMIT %(limit)s
"""
SELECT_EVENTS_OF_TOPICS: Final = """
SELECT notification_id, originator_version, topic, state FROM chronik_events
WHERE originator_id = %(id)s AND topic = ANY(%(topics)s)
ORDER BY originator_version
"""
SELECT_LAST_VERSION: Final = (
    "SELECT max(originator_version) AS version FROM chronik_events WHERE originator_id = %(id)s"
)

_NO_END: Final = 2**62
_CURSOR_KIND: Final = "audit_history"
_SCAN_PAGE: Final = 500
_ENTRY_SCOPE_TOPICS: Final = (
    topic_of(JournalEntry, "Created"),
    topic_of(JournalEntry, "VisibilityChanged"),
)


class NoSuchVersion(Exception):
    """A version past the latest, which the reader may see (else NotVisibleAtVersion)."""

    def __init__(self, latest: int) -> None:
        super().__init__(f"the latest version is {latest}")
        self.latest = latest


class NotYetCreated(Exception):
    def __init__(self, created_at: datetime) -> None:
        super().__init__(f"created at {iso(created_at)}")
        self.created_at = created_at


class NotVisibleAtVersion(Exception):
    """The reader may see the aggregate, but not as it was at that version
    (an entry that was another member's private one then), or the version is
    past the latest one, which the reader may not see."""


@dataclass(frozen=True, slots=True)
class Stream:
    """One aggregate as a reader may see it."""

    aggregate_id: UUID
    cls: type[Aggregate]
    # The first event's timestamp.
    created_at: datetime
    # Version ranges (first, last; None: no end) whose events the reader may see.
    visible: tuple[tuple[int, int | None], ...]

    @property
    def type(self) -> str:
        return AGGREGATE_TYPES[self.cls]

    def is_visible(self, version: int) -> bool:
        return any(lo <= version and (hi is None or version <= hi) for lo, hi in self.visible)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    events: list[dict[str, Any]]
    # Opaque; None on the last page.
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class StateAt:
    version: int
    as_of: datetime
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Row:
    position: int
    version: int
    topic: str
    event: DomainEvent


def _team_of(cls: type[Aggregate], first: DomainEvent) -> UUID | None:
    """The team an aggregate belongs to, from its first event: the team itself,
    else the team its creation event names (an aggregate never changes team)."""
    if cls is Team:
        return first.originator_id
    own = first.__dict__.get("team_id")
    if isinstance(own, UUID):
        return own
    return None if first.metadata is None else first.metadata.team_id


def entry_ranges(
    author_id: UUID, changes: Sequence[tuple[int, Visibility]], reader: UUID
) -> tuple[tuple[int, int | None], ...]:
    """The version ranges of an entry's events ``reader`` may see, given who wrote
    it and its visibility from each version on where it was set (Created first)."""
    if author_id == reader:
        return ((1, None),)
    ranges: list[tuple[int, int | None]] = []
    start: int | None = None
    for version, visibility in changes:
        shared = visibility is Visibility.TEAM
        if shared and start is None:
            start = version
        elif not shared and start is not None:
            ranges.append((start, version - 1))
            start = None
    if start is not None:
        ranges.append((start, None))
    return tuple(ranges)


def _after_version(stream: Stream, cursor: str) -> int:
    aggregate_id, version = decode_cursor(_CURSOR_KIND, cursor, str, int)
    if aggregate_id != str(stream.aggregate_id) or not 1 <= version <= _NO_END:
        raise InvalidCursor("cursor does not belong to this list")
    return int(version)


class AuditHistory:
    """Audit reads of one aggregate at a time, on the event store's own pool."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    def stream(self, team_id: UUID, aggregate_id: UUID, reader: UUID) -> Stream | None:
        """The aggregate as ``reader`` of ``team_id`` may see it; None when it does
        not exist, is another team's, or none of its events are the reader's to see."""
        first = self._rows(SELECT_EVENTS, {"id": aggregate_id, "after": 0, "upto": 1, "limit": 1})
        if not first:
            return None
        cls = aggregate_type_of(first[0].topic)
        if cls is None or _team_of(cls, first[0].event) != team_id:
            return None
        visible: tuple[tuple[int, int | None], ...] = ((1, None),)
        if cls is JournalEntry:
            params = {"id": aggregate_id, "topics": list(_ENTRY_SCOPE_TOPICS)}
            scope = self._rows(SELECT_EVENTS_OF_TOPICS, params)
            changes = [(r.version, Visibility(r.event.__dict__["visibility"])) for r in scope]
            visible = entry_ranges(first[0].event.__dict__["author_id"], changes, reader)
        if not visible:
            return None
        return Stream(aggregate_id, cls, first[0].event.timestamp, visible)

    def events(self, stream: Stream, *, cursor: str | None, limit: int) -> HistoryPage:
        """Up to ``limit`` of the events the reader may see, oldest first, from
        the start or after the page ``cursor`` ended.

        Raises InvalidCursor for a cursor not made by this method for this stream.
        """
        after_version = 0 if cursor is None else _after_version(stream, cursor)
        rows: list[_Row] = []
        for lo, hi in stream.visible:
            if hi is not None and hi <= after_version:
                continue
            params = {
                "id": stream.aggregate_id,
                "after": max(after_version, lo - 1),
                "upto": _NO_END if hi is None else hi,
                "limit": limit + 1 - len(rows),
            }
            rows += self._rows(SELECT_EVENTS, params)
            if len(rows) > limit:
                break
        page = rows[:limit]
        more = len(rows) > limit
        return HistoryPage(
            [event_item(r.position, r.topic, r.event) for r in page],
            encode_cursor(_CURSOR_KIND, str(stream.aggregate_id), page[-1].version)
            if more
            else None,
        )

    def state(
        self, stream: Stream, *, version: int | None = None, at: datetime | None = None
    ) -> StateAt:
        """The aggregate as it was at ``version``, or at time ``at`` (its last
        version whose event's timestamp is at or before ``at``), or now.

        Raises NoSuchVersion, NotYetCreated or NotVisibleAtVersion.
        """
        if at is not None and at < stream.created_at:
            # Before the first event's time, whatever later (skewed) stamps say.
            raise NotYetCreated(stream.created_at)
        latest = self._last_version(stream.aggregate_id)
        if version is not None and version > latest:
            if not stream.is_visible(latest):
                raise NotVisibleAtVersion(f"version {version} is not visible")
            raise NoSuchVersion(latest)
        if at is not None:
            version = self._version_at(stream.aggregate_id, latest, at)
        version = latest if version is None else version
        if not stream.is_visible(version):
            raise NotVisibleAtVersion(f"version {version} is not visible")
        aggregate = self._rebuild(stream.aggregate_id, version)
        return StateAt(aggregate.version, aggregate.modified_on, state_of(aggregate))

    def _version_at(self, aggregate_id: UUID, latest: int, at: datetime) -> int:
        """The newest version stamped at or before ``at`` (which is not before
        the first event's time, so version 1 at least). Versions are scanned
        from the newest back, since clocks of several writers need not agree:
        the answer is the greatest such version, not the first one found."""
        before = latest + 1
        while before > 2:
            params = {"id": aggregate_id, "before": before, "limit": _SCAN_PAGE}
            rows = self._rows(SELECT_EVENTS_BEFORE, params)
            if not rows:
                break
            for row in rows:
                if row.event.timestamp <= at:
                    return row.version
            before = rows[-1].version
        return 1

    def _rebuild(self, aggregate_id: UUID, version: int) -> Aggregate:
        # With a version the library replays (from the newest snapshot at or before
        # it) and never touches its cache of latest aggregates.
        try:
            aggregate: Aggregate = self._store.repository.get(aggregate_id, version=version)
        except (OperationalError, InterfaceError, PoolTimeout) as exc:
            raise Unavailable(str(exc)) from exc
        assert isinstance(aggregate, Aggregate)
        return aggregate

    def _last_version(self, aggregate_id: UUID) -> int:
        with self._connection() as conn:
            row = conn.execute(SELECT_LAST_VERSION, {"id": aggregate_id}).fetchone()
        return int(row["version"]) if row and row["version"] is not None else 0

    def _rows(self, query: str, params: dict[str, Any]) -> list[_Row]:
        with self._connection() as conn:
            found = conn.execute(query, params).fetchall()
        mapper = self._store.mapper
        rows = []
        for row in found:
            stored = StoredEvent(
                originator_id=params["id"],
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=bytes(row["state"]),
            )
            event = mapper.to_domain_event(stored)
            assert isinstance(event, DomainEvent)
            rows.append(
                _Row(row["notification_id"], row["originator_version"], row["topic"], event)
            )
        return rows

    @contextmanager
    def _connection(self) -> Iterator[Connection[DictRow]]:
        try:
            with self._store.recorder_.datastore.get_connection() as conn:
                yield conn
        except (OperationalError, InterfaceError, PoolTimeout) as exc:
            raise Unavailable(str(exc)) from exc
