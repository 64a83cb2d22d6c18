"""The event feed: every public event, per team, in position order.

Each event's public document is stored once, as it will be served, beside
what reads filter on. ``visible_to`` carries "private entries are visible to
their author only" into the feed: an entry event is the author's alone when
the entry is private as of that event (so the event that makes an entry
private is already private, and the one that makes it public again is
public), and NULL (the whole team's) otherwise. That needs each entry's author
and visibility, kept in ``entry_scope``, which only this projection reads.

Rows are only ever appended: a batch loads the scopes of the entries it
touches, folds its events in order, and writes with one COPY.

Beside each document a row keeps who caused the event, when, and its whole
metadata (which the public document leaves out), indexed for the audit
activity route (``list_activity``): who did what, in a time window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from psycopg import sql
from psycopg.errors import UndefinedColumn

from aggregates.journal_entry import Visibility
from projections.base import Cursor, Fact, Projection
from projections.folding import Key, MissingRow, Row, Table, jsonb
from projections.pagination import InvalidCursor, Page, decode_cursor, page_of
from projections.public_events import ENTRY_TOPICS, PUBLIC_TOPICS, public_event, team_of
from projections.reading import Conn, fetch_all, fetch_one, where

__all__ = [
    "EXPORT_PAGE",
    "MAX_POSITION",
    "ActivityNotIndexed",
    "EventFeedProjection",
    "EventPage",
    "FeedRow",
    "export_pages",
    "feed_rows",
    "list_activity",
    "list_events",
]

DDL: Final = """
CREATE TABLE public_events (
    position bigint PRIMARY KEY,
    team_id uuid NOT NULL,
    type text NOT NULL,
    aggregate_id uuid NOT NULL,
    visible_to uuid,
    doc jsonb NOT NULL,
    actor_user_id uuid,
    occurred_at timestamptz NOT NULL,
    metadata jsonb
);
CREATE INDEX public_events_team_idx ON public_events (team_id, position);
-- Audit activity: one member's events in position order, and time windows.
CREATE INDEX public_events_actor_idx ON public_events (team_id, actor_user_id, position);
CREATE INDEX public_events_time_idx ON public_events (team_id, occurred_at);
CREATE TABLE entry_scope (
    entry_id uuid PRIMARY KEY,
    author_id uuid NOT NULL,
    visibility text NOT NULL
);
"""

ENTRY_SCOPE: Final = Table(
    "entry_scope", key=(("entry_id", "uuid"),), columns=("entry_id", "author_id", "visibility")
)
# Straight into the table, no staging: rows are only appended, never upserted,
# and a position written twice is a bug the primary key must report.
COPY_EVENTS: Final = (
    "COPY public_events (position, team_id, type, aggregate_id, visible_to, doc,"
    " actor_user_id, occurred_at, metadata) FROM STDIN"
)


@dataclass(frozen=True, slots=True)
class FeedRow:
    position: int
    team_id: UUID
    type: str
    aggregate_id: UUID
    visible_to: UUID | None
    doc: dict[str, Any]
    # Who did it, when, and the whole metadata (for the audit activity route;
    # the public document leaves the metadata out).
    actor_user_id: UUID | None
    occurred_at: datetime
    metadata: dict[str, Any] | None


def scope_after(row: Row | None, fact: Fact) -> Row:
    """An entry's author and visibility after ``fact`` (an entry event)."""
    data = fact.data
    if fact.name == "Created":
        return {
            "entry_id": fact.aggregate_id,
            "author_id": data["author_id"],
            "visibility": str(data["visibility"]),
        }
    if row is None:
        raise MissingRow(f"entry {fact.aggregate_id} has no scope for {fact.name}")
    if fact.name == "VisibilityChanged":
        return {**row, "visibility": str(data["visibility"])}
    return row


def feed_rows(facts: Sequence[Fact], scopes: dict[Key, Row]) -> tuple[list[FeedRow], list[Row]]:
    """The feed rows of ``facts`` and the entry scopes they changed, given the
    stored scopes of the entries they touch. Pure, so it is tested without SQL."""
    scopes = dict(scopes)
    changed: dict[Key, Row] = {}
    rows: list[FeedRow] = []
    for fact in facts:
        doc = public_event(fact)
        if doc is None:
            continue
        visible_to = None
        if fact.topic in ENTRY_TOPICS:
            key = (fact.aggregate_id,)
            scope = scope_after(scopes.get(key), fact)
            if scope is not scopes.get(key):
                scopes[key] = changed[key] = scope
            if scope["visibility"] == Visibility.PRIVATE:
                visible_to = scope["author_id"]
        metadata = fact.event.metadata
        rows.append(
            FeedRow(
                fact.position,
                team_of(fact),
                doc["type"],
                fact.aggregate_id,
                visible_to,
                doc,
                None if metadata is None else metadata.actor_user_id,
                fact.event.timestamp,
                None if metadata is None else metadata.model_dump(mode="json"),
            )
        )
    return rows, list(changed.values())


def _scopes_to_load(facts: Sequence[Fact]) -> list[Key]:
    """Entries the batch touches but does not create before touching them."""
    first: dict[Key, str] = {}
    for fact in facts:
        if fact.topic in ENTRY_TOPICS:
            first.setdefault((fact.aggregate_id,), fact.name)
    return [key for key, name in first.items() if name != "Created"]


class EventFeedProjection(Projection):
    name = "event_feed"
    # Bump too when projections.public_events changes: documents are stored.
    # v2: actor, time and metadata columns for the audit activity route.
    version = 2
    tables = ("public_events",)  # entry_scope is this projection's own bookkeeping
    ddl = DDL

    @property
    def topics(self) -> frozenset[str]:
        return PUBLIC_TOPICS

    def apply(self, cur: Cursor, facts: Sequence[Fact]) -> None:
        to_load = _scopes_to_load(facts)
        stored = ENTRY_SCOPE.load(cur, to_load) if to_load else {}
        rows, scopes = feed_rows(facts, stored)
        if scopes:
            ENTRY_SCOPE.write(cur, scopes, ())
        if rows:
            with cur.copy(COPY_EVENTS) as copy:
                for r in rows:
                    copy.write_row(
                        (
                            r.position,
                            r.team_id,
                            r.type,
                            r.aggregate_id,
                            r.visible_to,
                            jsonb(r.doc),
                            r.actor_user_id,
                            r.occurred_at,
                            None if r.metadata is None else jsonb(r.metadata),
                        )
                    )


# -- reads ---------------------------------------------------------------------------

EXPORT_PAGE: Final = 1000
LIST_EVENTS: Final = sql.SQL(
    "SELECT position, doc FROM reads.public_events WHERE {} ORDER BY position LIMIT %(limit)s"
)
SELECT_TEAM_HEAD: Final = (
    "SELECT max(position) AS head FROM reads.public_events WHERE team_id = %(team_id)s"
)
# Private entries' events are their author's alone, whatever the reader's role.
_VISIBLE: Final = (
    "team_id = %(team_id)s AND position > %(after)s"
    " AND (visible_to IS NULL OR visible_to = %(reader)s)"
)
_FILTERS: Final = {"types": "type = ANY(%(types)s)", "upto": "position <= %(upto)s"}
Connect = Callable[[], AbstractContextManager[Conn]]


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[dict[str, Any]]
    # The last event's position: pass it back as ``after``. None: no events.
    next_after: int | None
    has_more: bool


def list_events(
    conn: Conn,
    team_id: UUID,
    reader_user_id: UUID,
    *,
    after: int,
    limit: int,
    types: Sequence[str] | None = None,
    upto: int | None = None,
) -> EventPage:
    """Up to ``limit`` events after position ``after`` that the reader may see,
    oldest first; ``types`` (public type names) narrows them, none or empty: all."""
    params: dict[str, Any] = {
        "team_id": team_id,
        "reader": reader_user_id,
        "after": after,
        "types": list(types) if types else None,
        "upto": upto,
        "limit": limit + 1,
    }
    rows = fetch_all(conn, LIST_EVENTS.format(where(_FILTERS, params, _VISIBLE)), params)
    page = rows[:limit]
    return EventPage(
        [row["doc"] for row in page],
        page[-1]["position"] if page else None,
        len(rows) > limit,
    )


LIST_ACTIVITY: Final = sql.SQL(
    "SELECT position, doc, metadata FROM reads.public_events WHERE {}"
    " ORDER BY position LIMIT %(limit)s"
)
# From inclusive, to exclusive: consecutive windows never share an event.
_ACTIVITY_FILTERS: Final = {
    "types": "type = ANY(%(types)s)",
    "actor": "actor_user_id = %(actor)s",
    "since": "occurred_at >= %(since)s",
    "until": "occurred_at < %(until)s",
}
_ACTIVITY_CURSOR: Final = "audit_activity"
# Global positions (notification ids) a cursor may hold.
MAX_POSITION: Final = 2**62


class ActivityNotIndexed(Exception):
    """The live generation of the feed predates the activity columns (version 1):
    the version-2 generation that has them is still being built."""


def list_activity(
    conn: Conn,
    team_id: UUID,
    reader_user_id: UUID,
    *,
    cursor: str | None,
    limit: int,
    actor: UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    types: Sequence[str] | None = None,
) -> Page:
    """Who did what: the public events the reader may see (the same rule as
    ``list_events``), each with its metadata, narrowed to one actor, a time
    window and types when given; oldest first, in keyset pages by position.

    Raises InvalidCursor for a cursor this list did not make, and
    ActivityNotIndexed while the live feed has no activity columns yet.
    """
    after = 0
    if cursor is not None:
        after = decode_cursor(_ACTIVITY_CURSOR, cursor, int)[0]
        if not 0 < after <= MAX_POSITION:
            raise InvalidCursor("cursor is not valid")
    params: dict[str, Any] = {
        "team_id": team_id,
        "reader": reader_user_id,
        "after": after,
        "types": list(types) if types else None,
        "actor": actor,
        "since": since,
        "until": until,
        "limit": limit + 1,
    }
    query = LIST_ACTIVITY.format(where(_ACTIVITY_FILTERS, params, _VISIBLE))
    try:
        rows = fetch_all(conn, query, params)
    except UndefinedColumn as exc:
        raise ActivityNotIndexed(str(exc)) from exc
    page = page_of(rows, limit, _ACTIVITY_CURSOR, "position")
    return Page(
        [{**row["doc"], "metadata": row["metadata"]} for row in page.rows], page.next_cursor
    )


def export_pages(
    connection: Connect,
    team_id: UUID,
    reader_user_id: UUID,
    *,
    after: int,
    types: Sequence[str] | None = None,
    page_size: int = EXPORT_PAGE,
) -> Iterator[list[dict[str, Any]]]:
    """Every event after ``after`` the reader may see, in keyset pages.

    Memory stays at one page whatever the feed's size. Each page takes a
    connection for one short query only, so a slow client never holds a pooled
    connection nor a long snapshot. The export ends at the team's newest event
    when it starts: it terminates even while the team keeps writing. Yields at
    least one (possibly empty) page, so the first query runs at the first ``next``.
    """
    with connection() as conn:
        found = fetch_one(conn, SELECT_TEAM_HEAD, {"team_id": team_id})
        upto = found["head"] if found and found["head"] is not None else after
        page = list_events(
            conn, team_id, reader_user_id, after=after, limit=page_size, types=types, upto=upto
        )
    yield page.events
    while page.has_more and page.next_after is not None:
        with connection() as conn:
            page = list_events(
                conn,
                team_id,
                reader_user_id,
                after=page.next_after,
                limit=page_size,
                types=types,
                upto=upto,
            )
        yield page.events
