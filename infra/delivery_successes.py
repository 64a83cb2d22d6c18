"""Successful webhook attempts, recorded many to a transaction, without the
sender waiting.

Each success used to commit on its own: under bench B5 at 500 events/s, with
PostgreSQL busy with the commands' own commits, recording one took 250-900 ms
(mostly waiting for a pooled connection and the WAL flush) and the delivery
worker fell behind by 15 s. The worker's sends now hand their successes to
one recorder, which writes whatever is queued in one statement.

The sender does not wait for that write either: a success decides nothing
more (it never disables an endpoint), and its delivery stays claimed, under
its lease, until the write commits. So a send's slot is free as soon as the
receiver has answered, and a slow commit no longer holds back the next sends
(``unrecorded`` lets the worker bound how many successes wait).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from infra import deliveries
from infra.deliveries import Attempt, Claim
from infra.waiting import Batches

__all__ = ["SuccessRecorder"]

log = structlog.get_logger(__name__)


class SuccessRecorder:
    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[Any]],
        on_written: Callable[[], None] = lambda: None,
    ) -> None:
        self._pool = pool
        self._on_written = on_written
        self._queued: Batches[tuple[Claim, Attempt]] = Batches()
        self._unrecorded = 0

    @property
    def unrecorded(self) -> int:
        """Successes handed over and not yet written (or given up on)."""
        return self._unrecorded

    def put(self, claim: Claim, attempt: Attempt) -> None:
        """Queues a 2xx attempt for the next write."""
        self._unrecorded += 1
        self._queued.put((claim, attempt))

    async def run(self, stopping: asyncio.Event) -> None:
        """Writes what is queued until stopped, and what is queued then."""
        await self._queued.serve(self._write, stopping)
        while batch := self._queued.take():
            await self._write(batch)

    async def _write(self, batch: list[tuple[Claim, Attempt]]) -> None:
        try:
            async with self._pool.connection() as conn:
                settled = await deliveries.record_successes(conn, batch)
            if len(settled) < len(batch):
                # Superseded claims: another worker's lease took over; their attempts are logged.
                log.info("successes of superseded claims", count=len(batch) - len(settled))
        except Exception:
            # The claims' leases run out and the deliveries are sent again.
            log.exception("successful deliveries could not be recorded", count=len(batch))
        finally:
            self._unrecorded -= len(batch)
            self._on_written()
