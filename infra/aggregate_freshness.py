"""Which cached aggregates are known to be current, so that loading one needs
no query.

The library's cache brings a cached aggregate up to date with a query for
newer events on every load: under B1's load that was two of a create's three
round trips (its team, to authenticate; its month's quota). Instead, one
thread per process LISTENs on the event table's channel and, on each
notification (and at least every ``POLL_SECONDS``), reads the
(position, aggregate, version) of every event after the last position it read.
Positions are handed out in commit order, so that read skips nothing, across
reconnects too.

A cached copy is *current* when the thread had read up to position ``p``
before the copy was loaded (so every event after ``p`` is one it reads), it
has seen no newer version of that aggregate since, and it is following (has
read within ``STALE_AFTER`` seconds). Anything else is loaded as before.
What this gives up: a change committed by another process is seen here once
its notification arrives (about a millisecond later; at most ``STALE_AFTER``
if the reader's connection is lost without a sign), not at the next request.
A command that decided on a copy made stale in that window fails its append
on the version, and ``doubt`` makes its retry load afresh.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Final
from uuid import UUID

import psycopg
import structlog
from psycopg import sql

__all__ = ["AggregateFreshness"]

log = structlog.get_logger(__name__)

SELECT_CHANGES: Final = (
    "SELECT notification_id, originator_id, originator_version FROM chronik_events"
    " WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
)
READ_LIMIT: Final = 10_000
# Notifications wake the reader at once; this bounds a missed one's cost.
POLL_SECONDS: Final = 0.5
# A reader that has not read for this long (a lost connection, a stall) vouches for nothing.
STALE_AFTER: Final = 2.0
# Memory bounds: past them the map is emptied and every cached copy is loaded
# afresh once (a bound, not an LRU).
MAX_VERSIONS: Final = 100_000
MAX_LOADED: Final = 20_000


class AggregateFreshness:
    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        channel: str,
        *,
        head: Callable[[psycopg.Connection[Any]], int],
        poll_seconds: float = POLL_SECONDS,
        stale_after: float = STALE_AFTER,
    ) -> None:
        self._connect = connect
        self._channel = channel
        self._head = head  # the log's newest position, read on a connection
        self._poll_seconds = poll_seconds
        self._stale_after = stale_after
        self._lock = threading.Lock()
        self._position: int | None = None  # read up to here; None until the first read
        self._read_at = 0.0  # monotonic time of the last completed read
        self._versions: dict[UUID, int] = {}  # newest version seen, per aggregate
        self._floor = 0  # loads before this position are not vouched for
        self._loaded_at: dict[UUID, int] = {}  # per cached copy: ``mark()`` before its load
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="aggregate-freshness")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def mark(self) -> int | None:
        """Taken before loading from the database; None: not following now."""
        with self._lock:
            return self._position if self._following() else None

    def loaded(self, aggregate_id: UUID, mark: int | None) -> None:
        """The cached copy of ``aggregate_id`` was loaded after ``mark()`` gave ``mark``."""
        with self._lock:
            if mark is None:
                self._loaded_at.pop(aggregate_id, None)
                return
            if len(self._loaded_at) >= MAX_LOADED:
                self._loaded_at.clear()
            self._loaded_at[aggregate_id] = mark

    def saved(self, aggregate_id: UUID, position: int) -> None:
        """This process appended the cached copy's newest event at or before
        ``position``: the copy is exact up to there, and any later event is one
        the reader will read (once it has started: its first read starts at the head)."""
        with self._lock:
            started = self._position is not None
        self.loaded(aggregate_id, position if started else None)

    def doubt(self, aggregate_id: UUID) -> None:
        """The cached copy may be stale (an append conflicted on it): load it next time."""
        with self._lock:
            self._loaded_at.pop(aggregate_id, None)

    def is_current(self, aggregate_id: UUID, version: int) -> bool:
        with self._lock:
            if not self._following():
                return False
            mark = self._loaded_at.get(aggregate_id)
            if mark is None or mark < self._floor:
                return False
            return self._versions.get(aggregate_id, 0) <= version

    @property
    def position(self) -> int | None:
        """Where reading has got to (for tests and diagnostics)."""
        with self._lock:
            return self._position

    def _following(self) -> bool:
        return self._position is not None and time.monotonic() - self._read_at < self._stale_after

    def _follow(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    delay = 0.5
                    while not self._stopping.is_set():
                        if self._read(conn) == READ_LIMIT:
                            continue  # more to read at once
                        # Wake at the first notification; the rest are drained with it.
                        for _ in conn.notifies(timeout=self._poll_seconds, stop_after=1):
                            pass
            except psycopg.Error as exc:
                log.warning("aggregate freshness lost its connection", error=str(exc))
                self._stopping.wait(delay)
                delay = min(delay * 2, 5.0)

    def _read(self, conn: psycopg.Connection[Any]) -> int:
        """Reads the changes after the last position; returns how many."""
        with self._lock:
            after = self._position
        first = after is None
        if after is None:
            # Start from the head: what came before is never read here.
            after = self._head(conn)
            rows: list[tuple[int, UUID, int]] = []
        else:
            rows = conn.execute(SELECT_CHANGES, (after, READ_LIMIT)).fetchall()
        # An aggregate's versions grow along the log, so the last of the batch
        # is its newest, and newer than any noted before: worked out before
        # the lock is taken, since the event loop takes it too (authentication
        # from memory). A first version needs no note: nothing can have been
        # cached before the aggregate existed (most events of a busy log).
        newest = {aggregate_id: version for _, aggregate_id, version in rows if version > 1}
        read_to = rows[-1][0] if rows else after
        with self._lock:
            if first:
                # A copy saved before the head (its save raced the first read)
                # may have been overtaken by an event this reader never reads.
                self._floor = after
            if len(self._versions) + len(newest) > MAX_VERSIONS:
                self._versions.clear()
                self._floor = after
            self._versions.update(newest)
            self._position = read_to
            self._read_at = time.monotonic()
        return len(rows)
