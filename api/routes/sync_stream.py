"""Live sync: Server-Sent Events and long-poll over the sync read model.

All the streams and polls of a process wait on one shared watch of the sync
projection's position (``ProjectionPositions`` learns it from the one LISTEN
connection of the process), and read pages through the pool as the pull does:
an idle client holds a coroutine and a socket, no database connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from functools import partial
from typing import Annotated, Final, Protocol
from uuid import UUID

import orjson
import psycopg
import structlog
from eventsourcing import persistence as es_persistence
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from psycopg_pool import ConnectionPool, PoolTimeout

from aggregates.base import Actor
from api.dependencies import TeamActor
from api.documented import SYNC_PAGE
from api.errors import SYNC_ERROR_RESPONSES, SYNC_ERROR_STATUSES, ApiError, error_responses
from api.freshness import ProjectionPositions, fresh
from api.responses import OrjsonResponse
from api.routes.sync import MAX_SYNC_PAGE
from api.sse import EventStreamResponse, encode_comment, encode_event, encode_retry, streams
from infra.bootstrap import Services
from projections import teams as team_reads
from projections.sync import CursorExpired, SyncPage, pull

__all__ = [
    "HEARTBEAT_SECONDS",
    "MAX_STREAMS_PER_KEY",
    "ProjectionChanges",
    "close_all_streams",
    "router",
    "sync_events",
]

log = structlog.get_logger(__name__)

# Module settings, read at use so tests can patch them.
HEARTBEAT_SECONDS = 15.0  # silence after which a stream sends ": heartbeat"
SEND_TIMEOUT_SECONDS = 10.0  # a client that takes no chunk for this long is dropped
MAX_STREAMS_PER_KEY = 5  # open streams per API key and process
# A stream is one long request: its key is checked again this often (while it
# is idle, so never between a change and its delivery); a revoked key or a
# removed member stops receiving within this plus one heartbeat.
REAUTH_SECONDS = 60.0
STREAM_PAGE_LIMIT = 500
RETRY_MILLISECONDS = 2000  # EventSource reconnection delay
RATE_LIMIT_RETRY_AFTER = 5
MAX_POLL_WAIT: Final = 60

PROJECTION: Final = "sync"
# How long the shared watch waits per call, so it stops soon after its last waiter.
_WATCH_SLICE: Final = 1.0
_WATCH_RETRY: Final = 1.0
HEARTBEAT: Final = encode_comment("heartbeat")
RESET: Final = encode_event(b'{"code":"CURSOR_EXPIRED","reset":true}', event="reset")
# The database or pool is down or saturated: the stream ends, the client resumes later.
_UNAVAILABLE: Final = (
    psycopg.OperationalError,
    PoolTimeout,
    es_persistence.OperationalError,
    es_persistence.InterfaceError,
)

router = APIRouter(prefix="/v1/teams/{team_id}/sync", tags=["sync"], responses=SYNC_ERROR_RESPONSES)
SyncFresh = Annotated[None, Depends(fresh(PROJECTION))]


def close_all_streams() -> int:
    """Ends every open event stream of this process (see api.sse.install_shutdown_signals)."""
    return streams.close_all()


# -- waiting for the projection ------------------------------------------------------


class ProjectionChanges:
    """Waits for any change of one projection past a position, for any number of
    waiters, with a single waiter on ``ProjectionPositions``: its ``wait_for``
    polls the registry while a position is not reached, and must not run once
    per client."""

    def __init__(self, positions: ProjectionPositions, projection: str) -> None:
        self._positions = positions
        self._projection = projection
        self._advanced = asyncio.Event()
        self._waiters = 0
        self._watch: asyncio.Task[None] | None = None

    def position(self) -> int:
        return self._positions.position(self._projection)

    async def wait_past(self, position: int, within: float) -> bool:
        """True once the projection has applied beyond ``position``; False on timeout."""
        if self.position() > position:
            return True
        self._waiters += 1
        if self._watch is None:
            self._watch = asyncio.create_task(self._run())
        try:
            async with asyncio.timeout(max(within, 0.0)):
                while self.position() <= position:
                    await self._advanced.wait()
        except TimeoutError:
            return self.position() > position
        finally:
            self._waiters -= 1
        return True

    async def _run(self) -> None:
        try:
            while self._waiters > 0:
                seen = self.position()
                try:
                    advanced = await self._positions.wait_for(
                        self._projection, seen + 1, _WATCH_SLICE
                    )
                except Exception as exc:  # noqa: BLE001 - the watch must outlive a database outage
                    log.warning(
                        "projection watch failed", projection=self._projection, error=str(exc)
                    )
                    await asyncio.sleep(_WATCH_RETRY)
                    continue
                if advanced:
                    # A fresh event per advance: waiters woken now wait on the next one.
                    self._advanced, woken = asyncio.Event(), self._advanced
                    woken.set()
        finally:
            # No await between the loop's last check and this: no waiter is stranded.
            self._watch = None


# -- pulling pages -------------------------------------------------------------------


def _pull_page(
    pool: ConnectionPool, team_id: UUID, user_id: UUID, cursor: str | None, limit: int
) -> SyncPage:
    with pool.connection() as conn:
        return pull(conn, team_id, user_id, cursor, limit)


def _key_still_valid(pool: ConnectionPool, actor: Actor) -> bool:
    # The teams read model, not the authenticator: that rebuilds the team
    # aggregate (tens of ms for a large team), this is two indexed reads.
    if actor.key_id is None:
        return True
    with pool.connection() as conn:
        key = team_reads.get_api_key(conn, actor.team_id, actor.key_id, holder=actor.user_id)
        if key is None or key["revoked_at"] is not None:
            return False
        return team_reads.get_member(conn, actor.team_id, actor.user_id) is not None


_PullKey = tuple[UUID, UUID, str | None, int]


class LiveSync:
    """Per application: the shared watch, and pulls bounded and shared. When the
    projection moves, every idle stream pulls at once; the same member at the
    same cursor (several devices, tabs) gets one query, and streams never hold
    more than half the pool, so requests keep their connections."""

    def __init__(self, positions: ProjectionPositions, services: Services) -> None:
        self.changes = ProjectionChanges(positions, PROJECTION)
        self.services = services
        self._slots = asyncio.Semaphore(max(1, services.settings.db_pool_size // 2))
        self._inflight: dict[_PullKey, asyncio.Task[SyncPage]] = {}

    async def pull(self, actor: Actor, cursor: str | None, limit: int) -> SyncPage:
        key = (actor.team_id, actor.user_id, cursor, limit)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._pull(*key))
            self._inflight[key] = task
            task.add_done_callback(partial(self._forget, key))
        # Shielded: one waiter leaving must not cancel the page the others await.
        return await asyncio.shield(task)

    async def _pull(self, team_id: UUID, user_id: UUID, cursor: str | None, limit: int) -> SyncPage:
        async with self._slots:
            pool = self.services.pool
            return await run_in_threadpool(_pull_page, pool, team_id, user_id, cursor, limit)

    async def key_still_valid(self, actor: Actor) -> bool:
        async with self._slots:
            return await run_in_threadpool(_key_still_valid, self.services.pool, actor)

    def _forget(self, key: _PullKey, task: asyncio.Task[SyncPage]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # marked retrieved even if every waiter has left


async def live_sync(request: Request) -> LiveSync:
    # Built on first use, beside the positions it watches: one per application.
    state = request.app.state
    live: LiveSync | None = getattr(state, "live_sync", None)
    if live is None:
        live = LiveSync(state.positions, state.services)
        state.live_sync = live
    return live


LiveDep = Annotated[LiveSync, Depends(live_sync)]


# -- the stream ----------------------------------------------------------------------


class SyncSource(Protocol):
    """What a stream needs from the world; faked in unit tests."""

    def position(self) -> int: ...
    async def wait_past(self, position: int, within: float) -> bool: ...
    async def pull(self, cursor: str) -> SyncPage: ...
    async def still_allowed(self) -> bool: ...


class _StreamSource:
    def __init__(self, live: LiveSync, actor: Actor) -> None:
        self._live = live
        self._actor = actor
        self._checked = time.monotonic()

    def position(self) -> int:
        return self._live.changes.position()

    async def wait_past(self, position: int, within: float) -> bool:
        return await self._live.changes.wait_past(position, within)

    async def pull(self, cursor: str) -> SyncPage:
        return await self._live.pull(self._actor, cursor, STREAM_PAGE_LIMIT)

    async def still_allowed(self) -> bool:
        if time.monotonic() - self._checked < REAUTH_SECONDS:
            return True
        if not await self._live.key_still_valid(self._actor):
            return False
        self._checked = time.monotonic()
        return True


def _framed(page: SyncPage) -> tuple[bytes | None, str, bool]:
    """The page's event (None when it has no changes), its cursor, has_more."""
    if not page.changes:
        return None, page.cursor, page.has_more
    body = {"changes": page.changes, "cursor": page.cursor, "has_more": page.has_more}
    return (
        encode_event(orjson.dumps(body), event="changes", id=page.cursor),
        page.cursor,
        page.has_more,
    )


async def sync_events(
    source: SyncSource, first: SyncPage, seen: int
) -> AsyncGenerator[bytes, None]:
    """The stream's chunks: one ``changes`` event per non-empty page, heartbeats
    in silences, ``reset`` when the cursor expires. ``seen`` is the projection
    position read before ``first`` was pulled: any later change moves past it."""
    # Only the cursor outlives a page: a caught-up stream waits holding no rows
    # (a full sync's first page is most of what a stream would otherwise keep).
    chunk, cursor, has_more = _framed(first)
    del first
    yield encode_retry(RETRY_MILLISECONDS)
    last_write = time.monotonic()
    try:
        while True:
            if chunk is not None:
                yield chunk
                chunk = None
                last_write = time.monotonic()
            # Checked after a send and in silences, never between a change and
            # its delivery: fan-out waits for pulls only.
            if not await source.still_allowed():
                log.info("sync stream ends: the key is no longer valid")
                return
            if not has_more:
                remaining = last_write + HEARTBEAT_SECONDS - time.monotonic()
                if remaining <= 0:
                    yield HEARTBEAT
                    last_write = time.monotonic()
                    continue
                if not await source.wait_past(seen, remaining):
                    continue
            # Read before the pull: a change applied during it still wakes us next time.
            seen = source.position()
            chunk, cursor, has_more = _framed(await source.pull(cursor))
    except CursorExpired:
        yield RESET
    except _UNAVAILABLE as exc:
        log.warning("sync stream ends: database unavailable", error=str(exc))


# -- routes --------------------------------------------------------------------------


def _stream_key(actor: Actor) -> str:
    return actor.key_id or f"user:{actor.user_id}"


@router.get(
    "/stream",
    response_class=EventStreamResponse,
    status_code=200,  # for the docs: the class takes no status_code
    summary="Changes as Server-Sent Events: `id` is the cursor; `Last-Event-ID` resumes",
    responses={
        200: {"description": "An endless event stream."},
        # The envelope as JSON, not filed under text/event-stream.
        **error_responses(*SYNC_ERROR_STATUSES, model=False),
    },
)
async def stream_changes(
    actor: TeamActor,
    live: LiveDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    last_event_id: Annotated[str | None, Header(max_length=200)] = None,
) -> EventStreamResponse:
    limit = MAX_STREAMS_PER_KEY
    slot = streams.open(_stream_key(actor), limit)
    if slot is None:
        raise ApiError(
            429,
            "RATE_LIMITED",
            f"at most {limit} sync streams may be open per API key",
            details={"max_streams": limit, "retry_after": RATE_LIMIT_RETRY_AFTER},
            headers={"Retry-After": str(RATE_LIMIT_RETRY_AFTER)},
        )
    try:
        # The first page is read before the headers go out, so a bad or expired
        # cursor still gets its 400 / 410 envelope.
        seen = live.changes.position()
        first = await live.pull(actor, last_event_id or cursor, STREAM_PAGE_LIMIT)
    except BaseException:
        slot.release()
        raise
    events = sync_events(_StreamSource(live, actor), first, seen)
    return EventStreamResponse(events, slot, send_timeout=SEND_TIMEOUT_SECONDS)


@router.get(
    "/poll",
    summary="The pull, waiting up to `wait` seconds for a change when there is none",
    responses=SYNC_PAGE,
)
async def poll_changes(
    actor: TeamActor,
    live: LiveDep,
    _: SyncFresh,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_SYNC_PAGE)] = 500,
    wait: Annotated[float, Query(ge=0, le=MAX_POLL_WAIT)] = 0,
) -> OrjsonResponse:
    deadline = time.monotonic() + wait
    seen = live.changes.position()
    page = await live.pull(actor, cursor, limit)
    # The projection also moves for other teams: wait again until a change is
    # ours or the time is up.
    while not page.changes:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not await live.changes.wait_past(seen, remaining):
            break
        seen = live.changes.position()
        page = await live.pull(actor, page.cursor, limit)
    return OrjsonResponse(
        {"changes": page.changes, "cursor": page.cursor, "has_more": page.has_more}
    )


@router.get(
    "", summary="Changes this key may see since the cursor (none: a full sync)", responses=SYNC_PAGE
)
async def pull_changes(
    actor: TeamActor,
    live: LiveDep,
    _: SyncFresh,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_SYNC_PAGE)] = 500,
    wait: Annotated[float, Query(ge=0, le=MAX_POLL_WAIT)] = 0,
) -> OrjsonResponse:
    """The pull; with ``wait`` it is the long-poll (``/sync/poll`` is the same)."""
    return await poll_changes(actor, live, None, cursor, limit, wait)
