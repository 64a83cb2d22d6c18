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


def test_tasks_started_while_the_leftovers_are_cancelled_are_cancelled_too() -> None:
    """As a NATS client does that reconnects while it is torn down: its
    reconnect task, cancelled, has just started a reader, a pinger and a
    flusher. Left pending when the loop closes, they fail at garbage
    collection ("Event loop is closed"), in whatever test runs then."""
    spawned: list[asyncio.Task[None]] = []

    async def forever() -> None:
        await asyncio.Event().wait()

    async def reconnecting() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            spawned.append(asyncio.get_running_loop().create_task(forever()))
            raise

    async def main(stopping: asyncio.Event) -> None:
        asyncio.get_running_loop().create_task(reconnecting())
        await asyncio.sleep(0)  # let it start waiting

    thread = LoopThread("test-loop", main)
    thread.start()
    thread.join(5)
    assert not thread._thread.is_alive()
    assert len(spawned) == 1
    assert spawned[0].cancelled()
