"""infra.loop_thread: a coroutine on a loop of its own, stopped from another thread."""

from __future__ import annotations

import asyncio

from infra.loop_thread import LoopThread


def test_stop_sets_the_event_the_coroutine_waits_on() -> None:
    seen: list[str] = []

    async def main(stopping: asyncio.Event) -> None:
        seen.append("started")
        await stopping.wait()
        seen.append("stopped")

    thread = LoopThread("test-loop", main)
    thread.start()
    thread.request_stop()
    thread.join(5)
    assert seen == ["started", "stopped"]


def test_stopping_a_coroutine_that_already_returned_is_harmless() -> None:
    async def main(stopping: asyncio.Event) -> None:
        return None

    thread = LoopThread("test-loop", main)
    thread.start()
    thread.join(5)
    thread.request_stop()  # its loop is closed by now
    thread.join(5)
    assert not thread._thread.is_alive()
