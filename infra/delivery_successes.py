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
from infra.waiting import Batches

__all__ = ["SuccessRecorder"]


class SuccessRecorder:
    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[Any]]) -> None:
        self._pool = pool
        self._queued: Batches[tuple[Claim, Attempt, asyncio.Future[bool]]] = Batches()

    async def record(self, claim: Claim, attempt: Attempt) -> bool:
        """Stores a 2xx attempt; True if it settled the delivery, False if the
        claim was superseded (its attempt is logged all the same)."""
        settled: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queued.put((claim, attempt, settled))
        return await settled

    async def run(self, stopping: asyncio.Event) -> None:
        """Writes what is queued until stopped, and what is queued then."""
        await self._queued.serve(self._write, stopping)
        while batch := self._queued.take():
            await self._write(batch)

    async def _write(self, batch: list[tuple[Claim, Attempt, asyncio.Future[bool]]]) -> None:
        try:
            async with self._pool.connection() as conn:
                settled = await deliveries.record_successes(
                    conn, [(claim, attempt) for claim, attempt, _ in batch]
                )
        except Exception as exc:  # noqa: BLE001 - every sender of the batch hears it
            for _, _, future in batch:
                with contextlib.suppress(asyncio.InvalidStateError):
                    future.set_exception(exc)
            return
        for claim, _, future in batch:
            with contextlib.suppress(asyncio.InvalidStateError):
                future.set_result((claim.id, claim.attempts) in settled)
