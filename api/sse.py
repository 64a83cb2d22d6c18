"""Server-Sent Events over raw ASGI: framing, sends bounded in time, and a
process-wide registry of open streams (per-key caps, closing them all at shutdown).

Why not StreamingResponse: a client that stops reading makes the server's
``send`` wait for the socket to drain, forever. Here every ``send`` has a
deadline; a stream whose client misses it is abandoned alone, and what one
stream holds is bounded by one chunk plus the transport's write buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Final

import structlog
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

__all__ = [
    "EventStreamResponse",
    "SlowClient",
    "StreamRegistry",
    "StreamSlot",
    "encode_comment",
    "encode_event",
    "encode_retry",
    "install_shutdown_signals",
    "send_within",
    "streams",
]

log = structlog.get_logger(__name__)

MEDIA_TYPE: Final = "text/event-stream"
_END: Final[Message] = {"type": "http.response.body", "body": b"", "more_body": False}


# -- framing -------------------------------------------------------------------------


def _single_line(name: str, value: str) -> str:
    # A newline would end the field early and let the value inject other fields.
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"an SSE {name} must be one line without NUL")
    return value


def encode_event(data: bytes | str, *, event: str | None = None, id: str | None = None) -> bytes:
    """One event: ``event:``, ``id:``, then one ``data:`` line per line of ``data``."""
    text = data.decode() if isinstance(data, bytes) else data
    lines: list[str] = []
    if event is not None:
        lines.append(f"event: {_single_line('event', event)}")
    if id is not None:
        lines.append(f"id: {_single_line('id', id)}")
    # The client joins data lines with "\n": a multi-line payload survives as is.
    lines.extend(f"data: {line}" for line in text.replace("\r\n", "\n").split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


def encode_comment(text: str) -> bytes:
    """A comment line: clients ignore it; proxies and clients see the stream alive."""
    return f": {_single_line('comment', text)}\n\n".encode()


def encode_retry(milliseconds: int) -> bytes:
    """How long an EventSource waits before reconnecting (no event is dispatched)."""
    if milliseconds < 0:
        raise ValueError("retry must not be negative")
    return f"retry: {milliseconds}\n\n".encode()


# -- bounded sends -------------------------------------------------------------------


class SlowClient(Exception):
    """The client did not take a chunk within the send timeout."""


async def send_within(send: Send, message: Message, within: float) -> None:
    try:
        async with asyncio.timeout(within):
            await send(message)
    except TimeoutError:
        raise SlowClient(f"the client took no data for {within:g} s") from None


# -- the registry of open streams ----------------------------------------------------


@dataclass(eq=False)
class StreamSlot:
    """One open stream: its place under its key's cap and its stop signal."""

    key: str
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    _registry: StreamRegistry | None = None

    def release(self) -> None:
        """Gives the place back; idempotent."""
        registry, self._registry = self._registry, None
        if registry is not None:
            registry._release(self)


class StreamRegistry:
    """Open streams of this process, by key. Thread-safe: tests run several
    servers in one process, each with its own loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, set[StreamSlot]] = {}

    def open(self, key: str, limit: int) -> StreamSlot | None:
        """A slot for one more stream of ``key``, or None when it has ``limit`` open."""
        with self._lock:
            slots = self._by_key.setdefault(key, set())
            if len(slots) >= limit:
                return None
            slot = StreamSlot(key, asyncio.get_running_loop(), _registry=self)
            slots.add(slot)
            return slot

    def count(self, key: str) -> int:
        with self._lock:
            return len(self._by_key.get(key, ()))

    def close_all(self) -> int:
        """Asks every open stream to end; callable from any thread (not a signal
        handler: it takes a lock). Returns how many were asked."""
        with self._lock:
            slots = [slot for group in self._by_key.values() for slot in group]
        for slot in slots:
            with contextlib.suppress(RuntimeError):  # that server's loop is closed
                slot.loop.call_soon_threadsafe(slot.stop.set)
        return len(slots)

    def _release(self, slot: StreamSlot) -> None:
        with self._lock:
            group = self._by_key.get(slot.key)
            if group is not None:
                group.discard(slot)
                if not group:
                    del self._by_key[slot.key]


streams: Final = StreamRegistry()


def install_shutdown_signals() -> bool:
    """Makes SIGINT/SIGTERM also end every open stream, then calls the handler
    that was there (uvicorn's). Call it from the lifespan's startup, on the main
    thread, while uvicorn's handlers are installed: uvicorn waits for open
    responses before it shuts down, and an event stream never ends by itself.
    Returns False (and does nothing) off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return False
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)

        def handler(
            sig: int,
            frame: FrameType | None,
            previous: Callable[[int, FrameType | None], object] | int | None = previous,
        ) -> None:
            # No lock in a signal handler: the loop does the work a moment later.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(streams.close_all)
            if callable(previous):
                previous(sig, frame)
            elif previous != signal.SIG_IGN:
                # The default action, as if this handler had not been here.
                signal.signal(sig, signal.SIG_DFL)
                signal.raise_signal(sig)

        signal.signal(signum, handler)
    return True


# -- the response --------------------------------------------------------------------


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class EventStreamResponse(Response):
    """Sends the chunks of ``events`` until it ends, the client leaves, the slot
    is stopped, or the client takes longer than ``send_timeout`` for a chunk."""

    media_type = MEDIA_TYPE

    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        slot: StreamSlot,
        *,
        send_timeout: float,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.events = events
        self.slot = slot
        self.send_timeout = send_timeout
        self.status_code = 200
        self.background: BackgroundTask | None = None
        # No Content-Length; no caching; no buffering by nginx-style proxies.
        self.init_headers(
            {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = "ended"
        try:
            start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
            await send_within(send, start, self.send_timeout)
            outcome = await self._run(receive, send)
            if outcome in ("ended", "stopped"):
                await send_within(send, _END, self.send_timeout)
        except SlowClient as exc:
            # Returning with the response unfinished makes the server close the
            # connection; nothing more is buffered for this client.
            outcome = "slow client"
            log.warning("event stream abandoned", reason=str(exc), key=self.slot.key)
        finally:
            self.slot.release()
            await self.events.aclose()
            log.debug("event stream closed", outcome=outcome, key=self.slot.key)

    async def _run(self, receive: Receive, send: Send) -> str:
        pump = asyncio.ensure_future(self._pump(send))
        gone = asyncio.ensure_future(_disconnected(receive))
        stop = asyncio.ensure_future(self.slot.stop.wait())
        try:
            done, _ = await asyncio.wait({pump, gone, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, gone, stop):
                task.cancel()
            await asyncio.gather(pump, gone, stop, return_exceptions=True)
        if pump in done:
            pump.result()  # SlowClient propagates
            return "ended"
        return "disconnected" if gone in done else "stopped"

    async def _pump(self, send: Send) -> None:
        try:
            async for chunk in self.events:
                message = {"type": "http.response.body", "body": chunk, "more_body": True}
                await send_within(send, message, self.send_timeout)
        except SlowClient:
            raise
        except Exception:
            # A failure mid-stream (the database, a bug) ends this stream only;
            # the client resumes from its Last-Event-ID.
            log.exception("event stream failed", key=self.slot.key)
