"""Waiting in the fan-out's event loop without missing a stop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Batches", "first_of"]

T = TypeVar("T")


async def first_of(*events: asyncio.Event, within: float | None = None) -> None:
    """Returns when any of ``events`` is set, or when ``within`` seconds passed."""
    waiters = {asyncio.ensure_future(event.wait()) for event in events}
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class Batches(Generic[T]):
    """Items put by many tasks and written by one: each batch is whatever
    arrived while the one before it was written."""

    def __init__(self) -> None:
        self._items: list[T] = []
        self._arrived = asyncio.Event()

    def put(self, item: T) -> None:
        self._items.append(item)
        self._arrived.set()

    def take(self) -> list[T]:
        """Everything put and not yet taken."""
        items, self._items = self._items, []
        return items

    async def serve(
        self, write: Callable[[list[T]], Awaitable[None]], stopping: asyncio.Event
    ) -> None:
        """Writes batch after batch until ``stopping``; what arrives after
        that is left for ``take``."""
        while not stopping.is_set():
            await first_of(self._arrived, stopping)
            self._arrived.clear()
            while batch := self.take():
                await write(batch)
