"""The delivery worker's slots: successes waiting to be written count against
them only beyond the concurrency, and a worker with no free slot waits to be
woken instead of asking the database what is due (which, with deliveries
due, would answer "now" and spin the loop)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, NoReturn, cast
from uuid import uuid4

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from infra.deliveries import Attempt, Claim
from infra.delivery_worker import DeliveryWorker
from infra.settings import Settings

pytestmark = pytest.mark.anyio


class NoPool:
    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[NoReturn]:
        raise AssertionError("the database was asked")
        yield


async def _never_disable(team_id: Any, endpoint_id: Any, reason: str) -> None:
    raise AssertionError("nothing is disabled here")


def _worker(concurrency: int) -> DeliveryWorker:
    pool = cast(AsyncConnectionPool[AsyncConnection[Any]], NoPool())
    settings = Settings(webhook_concurrency=concurrency)
    return DeliveryWorker(settings, pool, "", _never_disable, poll_interval=1.5)


def _sent(n: int) -> tuple[Claim, Attempt]:
    claim = Claim(n, uuid4(), uuid4(), f"evt_{n}", "{}", 1, 1, n)
    return claim, Attempt(datetime.now(UTC), 3, 204, None, None)


async def test_unwritten_successes_take_slots_only_beyond_the_concurrency() -> None:
    worker = _worker(concurrency=4)
    for n in range(4):
        worker._successes.put(*_sent(n))
    assert worker._free_slots() == 4
    for n in range(4, 7):
        worker._successes.put(*_sent(n))
    assert worker._successes.unrecorded == 7
    assert worker._free_slots() == 1


async def test_with_no_free_slot_the_worker_waits_without_asking_what_is_due() -> None:
    worker = _worker(concurrency=2)
    for n in range(4):
        worker._successes.put(*_sent(n))
    assert worker._free_slots() == 0
    assert await worker._seconds_to_wait([], 0) == 1.5
