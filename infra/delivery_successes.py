"""Successful webhook attempts, recorded many to a transaction.

Each success used to commit on its own: under bench B5 at 500 events/s, with
PostgreSQL busy with the commands' own commits, recording one took 250-900 ms
(mostly waiting for a pooled connection and the WAL flush) and the delivery
worker fell behind by 15 s. The worker's sends now hand their successes to
one recorder, which writes whatever is queued in one statement.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from infra import deliveries
from infra.deliveries import Attempt, Claim
from infra.waiting import first_of

__all__ = ["SuccessRecorder"]


class SuccessRecorder:
    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[Any]]) -> None:
        self._pool = pool
        self._queued: list[tuple[Claim, Attempt, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()

    async def record(self, claim: Claim, attempt: Attempt) -> bool:
        """Stores a 2xx attempt; True if it settled the delivery, False if the
        claim was superseded (its attempt is logged all the same)."""
        settled: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queued.append((claim, attempt, settled))
        self._wake.set()
        return await settled

    async def run(self, stopping: asyncio.Event) -> None:
        """Writes what is queued until stopped, and what is queued then."""
        while not stopping.is_set():
            await first_of(self._wake, stopping)
            self._wake.clear()
            await self._write_queued()
        await self._write_queued()

    async def _write_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                async with self._pool.connection() as conn:
                    settled = await deliveries.record_successes(
                        conn, [(claim, attempt) for claim, attempt, _ in batch]
                    )
            except Exception as exc:  # noqa: BLE001 - every sender of the batch hears it
                for _, _, future in batch:
                    with contextlib.suppress(asyncio.InvalidStateError):
                        future.set_exception(exc)
                continue
            for claim, _, future in batch:
                with contextlib.suppress(asyncio.InvalidStateError):
                    future.set_result((claim.id, claim.attempts) in settled)
