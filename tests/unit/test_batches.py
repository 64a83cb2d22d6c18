"""Batches: what arrives while a batch is written is the next batch, serving
drains what arrived before it stops, and what comes later is left to take."""

from __future__ import annotations

import asyncio

from infra.waiting import Batches


def test_items_put_during_a_write_form_the_next_batch() -> None:
    async def scenario() -> tuple[list[list[int]], list[int]]:
        batches: Batches[int] = Batches()
        written: list[list[int]] = []
        stopping = asyncio.Event()

        async def write(batch: list[int]) -> None:
            written.append(batch)
            if batch == [1, 2]:
                batches.put(3)  # arrive while this batch is written
                batches.put(4)
            elif batch == [3, 4]:
                stopping.set()
                batches.put(5)  # arrives as the stop is asked: still written

        batches.put(1)
        batches.put(2)
        async with asyncio.timeout(5):
            await batches.serve(write, stopping)
        batches.put(6)  # after serving: the caller's to take
        return written, batches.take()

    written, left = asyncio.run(scenario())
    assert written == [[1, 2], [3, 4], [5]]
    assert left == [6]
