"""An asyncio loop in a thread of its own, running one coroutine until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["LoopThread"]

Main = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class LoopThread:
    """Runs ``main(stopping)`` on a new event loop in a daemon thread;
    ``request_stop`` sets ``stopping`` from any thread, ``join`` waits for the end."""

    def __init__(self, name: str, main: Main) -> None:
        self._main = main
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait(10)

    def request_stop(self) -> None:
        if self._loop is None or self._stopping is None:
            return
        with contextlib.suppress(RuntimeError):  # ``main`` already returned: the loop is closed
            self._loop.call_soon_threadsafe(self._stopping.set)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        with asyncio.Runner() as runner:
            runner.run(self._until_stopped())
            # The runner cancels the tasks left when ``main`` returns, but not
            # those they start while being cancelled (a NATS client that
            # reconnects as it is torn down starts a reader, a pinger and a
            # flusher): left pending as the loop closes, they fail later at
            # garbage collection, "Event loop is closed".
            runner.run(_cancel_leftovers())

    async def _until_stopped(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._started.set()
        await self._main(self._stopping)


async def _cancel_leftovers(rounds: int = 10) -> None:
    """Cancels every other task of this loop, and then those started meanwhile."""
    this = asyncio.current_task()
    for _ in range(rounds):
        left = [task for task in asyncio.all_tasks() if task is not this]
        if not left:
            return
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
