"""``chronik export``: the log's public events as NDJSON, read from the event store.

Each line is exactly the document ``projections.public_events.public_event``
makes (the one ``/events``, NATS and webhook bodies carry), in position order.
The events are read from the event store itself, not from the event feed's
read table, so an export never depends on how far the projections have got.
It is an operator's tool: private entries' events are included.

Memory stays at one page of events whatever the log's size: the library's
notification log is read in keyset pages (each on a pooled connection for one
short query, so no long snapshot is held), decoded, written, and dropped. The
export ends at the newest position when it starts, so it terminates while
the log keeps growing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, BinaryIO, Final
from uuid import UUID

import orjson
import psycopg
from eventsourcing.persistence import InterfaceError, Notification, OperationalError
from psycopg.rows import tuple_row
from psycopg_pool import PoolTimeout
from tqdm import tqdm

from aggregates.base import DomainEvent
from aggregates.team import Team
from infra.db import PostgresTarget
from infra.event_store import EventStore, head_position, open_event_store
from infra.operations import OperationError
from infra.projection_wiring import connector
from infra.settings import Settings
from projections.base import Fact, topic_of
from projections.public_events import PUBLIC_TOPICS, UnknownTeam, public_event

__all__ = ["EXPORT_PAGE", "ExportRange", "ExportSummary", "export", "public_documents"]

EXPORT_PAGE: Final = 1000
# Only topics with a public form are read at all: bookkeeping events (quota
# counting, say) are neither fetched nor decoded.
_TOPICS: Final = sorted(PUBLIC_TOPICS)
# The progress bar's total: one count in the database, nothing fetched or decoded.
COUNT_TO_GO: Final = """
SELECT count(*) FROM chronik_events
WHERE notification_id > %s AND notification_id <= %s AND topic = ANY(%s)
"""
_LINE: Final = orjson.OPT_APPEND_NEWLINE
# A team exists in the log once its creation is stored (the same lookup as
# loading the aggregate: the primary key), whatever the projections have seen.
SELECT_TEAM_CREATED: Final = """
SELECT 1 FROM chronik_events WHERE originator_id = %s AND originator_version = 1 AND topic = %s
"""


@dataclass(frozen=True, slots=True)
class ExportRange:
    """Positions in (after, upto], and how many public-topic events that is."""

    after: int
    upto: int
    to_read: int


@dataclass(frozen=True, slots=True)
class ExportSummary:
    exported: int
    read: int
    upto: int
    seconds: float

    @property
    def rate(self) -> float:
        """Events read per second."""
        return self.read / self.seconds if self.seconds else 0.0


def export(
    settings: Settings,
    open_output: Callable[[], AbstractContextManager[BinaryIO]],
    *,
    after: int,
    team: UUID | None = None,
    page_size: int = EXPORT_PAGE,
) -> ExportSummary:
    """Write the public events after ``after`` (of ``team`` only, if given) to
    the binary stream ``open_output()`` returns; it is opened only once the
    request is known to be valid, so a bad team id leaves no empty file."""
    if after < 0:
        raise OperationError(f"--after must be a position (0 or more), not {after}")
    target = PostgresTarget.from_url(settings.database_url_value())
    with connector(target, name="chronik-export")() as conn:
        if team is not None and not _team_exists(conn, team):
            raise OperationError(f"no team {team} in the event store")
        span = _range(conn, after)
    store = open_event_store(target, pool_size=1)
    try:
        with open_output() as out:
            return _write(store, out, span, team, page_size)
    finally:
        store.close()


def _team_exists(conn: psycopg.Connection[Any], team: UUID) -> bool:
    with conn.cursor(row_factory=tuple_row) as cur:
        found = cur.execute(SELECT_TEAM_CREATED, (team, topic_of(Team, "Created"))).fetchone()
    return found is not None


def _range(conn: psycopg.Connection[Any], after: int) -> ExportRange:
    upto = head_position(conn)
    with conn.cursor(row_factory=tuple_row) as cur:
        counted = cur.execute(COUNT_TO_GO, (after, upto, _TOPICS)).fetchone()
    return ExportRange(after, upto, int(counted[0]) if counted else 0)


def _write(
    store: EventStore, out: BinaryIO, span: ExportRange, team: UUID | None, page_size: int
) -> ExportSummary:
    started = time.monotonic()
    exported = read = 0
    bar = tqdm(
        total=span.to_read, unit="event", unit_scale=True, desc="exporting",
        file=sys.stderr, dynamic_ncols=True,
    )  # fmt: skip
    try:
        for page, documents in public_documents(store, span, team=team, page_size=page_size):
            out.write(b"".join(orjson.dumps(d, option=_LINE) for d in documents))
            exported += len(documents)
            read += page
            bar.update(page)
        out.flush()
    finally:
        bar.close()
    return ExportSummary(exported, read, span.upto, time.monotonic() - started)


def public_documents(
    store: EventStore,
    span: ExportRange,
    *,
    team: UUID | None = None,
    page_size: int = EXPORT_PAGE,
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Per page of the log: how many events were read, and their public
    documents (of ``team`` only, if given), in position order."""
    for page in _pages(store, span, page_size):
        documents = []
        for notification in page:
            event = store.mapper.to_domain_event(notification)
            assert isinstance(event, DomainEvent)
            document = _document(Fact(notification.id, notification.topic, event))
            if document is not None and (team is None or document["team_id"] == str(team)):
                documents.append(document)
        yield len(page), documents


def _pages(store: EventStore, span: ExportRange, page_size: int) -> Iterator[list[Notification]]:
    """The log in (after, upto], page by page (keyset: each page starts after
    the last position of the one before)."""
    position = span.after
    while position < span.upto:
        page = _read_page(store, position, span.upto, page_size)
        if not page:
            return
        yield page
        position = page[-1].id


def _read_page(store: EventStore, after: int, upto: int, limit: int) -> list[Notification]:
    """The library's cursor read, bounded by the export's end and narrowed to
    topics with a public form."""
    try:
        return list(
            store.recorder_.select_notifications(
                after, limit, stop=upto, topics=_TOPICS, inclusive_of_start=False
            )
        )
    except (OperationalError, InterfaceError, PoolTimeout) as exc:
        raise OperationError(
            f"the event store stopped answering after position {after}: {exc}; what was "
            f"written is complete up to there (resume with --after {after})"
        ) from None


def _document(fact: Fact) -> dict[str, Any] | None:
    try:
        return public_event(fact)
    except UnknownTeam as exc:
        # The event feed stalls at this event too: the export says where, loudly.
        raise OperationError(f"{exc}: the export stops there, its output incomplete") from None
