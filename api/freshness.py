"""Read-your-writes: a read with ``min_position`` waits until the projection it
reads has applied that position, or answers 503 STALE_READ when the bound runs out.

One LISTEN connection per API process learns each projection's position from
the runners' NOTIFY after every batch, so waiting costs no queries; a short
poll of the registry covers notifications missed while it reconnects.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Annotated, Any, Final

import psycopg
import structlog
from fastapi import Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from psycopg import sql

from api.errors import ApiError
from projections.registry import PROGRESS_CHANNEL

__all__ = ["ProjectionPositions", "fresh"]

log = structlog.get_logger(__name__)

SELECT_ACTIVE: Final = (
    "SELECT projection, position FROM projection_generations WHERE state = 'active'"
)
_POLL_SECONDS: Final = 0.25


class ProjectionPositions:
    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        borrow: Callable[[], AbstractContextManager[psycopg.Connection[Any]]],
    ) -> None:
        self._connect = connect  # the LISTEN connection, held for the process's life
        self._borrow = borrow  # a pooled connection for the occasional refresh
        self._positions: dict[str, int] = {}
        self._positions_lock = threading.Lock()
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="projection-positions")

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def position(self, projection: str) -> int:
        return self._positions.get(projection, 0)

    async def wait_for(self, projection: str, position: int, within: float) -> bool:
        if self.position(projection) >= position:
            return True
        deadline = time.monotonic() + within
        await run_in_threadpool(self._refresh)
        while self.position(projection) < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), min(remaining, _POLL_SECONDS))
            except TimeoutError:
                await run_in_threadpool(self._refresh)
        return True

    def _refresh(self) -> None:
        with self._borrow() as conn:
            for name, position in conn.execute(SELECT_ACTIVE).fetchall():
                self._advance(name, position)

    def _advance(self, projection: str, position: int) -> None:
        # Positions only grow: a rebuilt generation is switched in at or past
        # the one it replaces, so readers never go back.
        with self._positions_lock:
            if position <= self._positions.get(projection, 0):
                return
            self._positions[projection] = position
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _listen(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(PROGRESS_CHANNEL)))
                    delay = 0.5
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._on_progress(note.payload)
            except psycopg.Error as exc:
                log.warning("projection positions lost their connection", error=str(exc))
                self._stopping.wait(delay)
                delay = min(delay * 2, 5.0)

    def _on_progress(self, payload: str) -> None:
        name, _, position, state = payload.split(" ")
        if state == "active":
            self._advance(name, int(position))


def fresh(projection: str) -> Callable[..., Awaitable[None]]:
    """A dependency: wait for ``min_position`` (query) or ``Chronik-Min-Position``."""

    async def wait_until_fresh(
        request: Request,
        min_position: Annotated[int | None, Query(ge=0, le=2**62)] = None,
        chronik_min_position: Annotated[int | None, Header(ge=0, le=2**62)] = None,
    ) -> None:
        wanted = max(min_position or 0, chronik_min_position or 0)
        if not wanted:
            return
        positions: ProjectionPositions = request.app.state.positions
        timeout = request.app.state.services.settings.read_wait_timeout
        if not await positions.wait_for(projection, wanted, timeout):
            raise ApiError(
                503,
                "STALE_READ",
                f"the {projection} read model has not reached position {wanted} yet",
                details={
                    "projection": projection,
                    "min_position": wanted,
                    "position": positions.position(projection),
                },
                headers={"Retry-After": "1"},
            )

    return wait_until_fresh


EntriesFresh = Annotated[None, Depends(fresh("entries"))]
TeamsFresh = Annotated[None, Depends(fresh("teams"))]
PromptsFresh = Annotated[None, Depends(fresh("prompts"))]
WebhooksFresh = Annotated[None, Depends(fresh("webhooks"))]
QuotasFresh = Annotated[None, Depends(fresh("quotas"))]
