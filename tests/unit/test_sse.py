"""SSE framing, the bounded event-stream response, the stream registry, and the
sync stream's events against fakes (no server, no database)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncGenerator, Iterator
from types import FrameType
from typing import Any

import orjson
import pytest
from starlette.types import Message

from api.routes import sync_stream
from api.routes.sync_stream import ProjectionChanges, sync_events
from api.sse import (
    EventStreamResponse,
    SlowClient,
    StreamRegistry,
    StreamSlot,
    encode_comment,
    encode_event,
    encode_retry,
    install_shutdown_signals,
    send_within,
    streams,
)
from projections.sync import CursorExpired, SyncPage

pytestmark = pytest.mark.anyio

# -- framing -------------------------------------------------------------------------


def test_an_event_has_its_fields_then_a_blank_line() -> None:
    framed = encode_event(b'{"a":1}', event="changes", id="abc")
    assert framed == b'event: changes\nid: abc\ndata: {"a":1}\n\n'
    assert encode_event("x") == b"data: x\n\n"


def test_multi_line_data_becomes_one_data_line_per_line() -> None:
    assert encode_event("one\ntwo\r\nthree") == b"data: one\ndata: two\ndata: three\n\n"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_fields_that_would_break_the_framing_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="one line"):
        encode_event("x", id=bad)
    with pytest.raises(ValueError, match="one line"):
        encode_event("x", event=bad)
    with pytest.raises(ValueError, match="one line"):
        encode_comment(bad)


def test_comments_and_retry() -> None:
    assert encode_comment("heartbeat") == b": heartbeat\n\n"
    assert encode_retry(2000) == b"retry: 2000\n\n"
    with pytest.raises(ValueError, match="negative"):
        encode_retry(-1)


# -- bounded sends and the response --------------------------------------------------


class Client:
    """An ASGI peer: records what is sent; can stop reading, or leave."""

    def __init__(self, *, reads: bool = True) -> None:
        self.sent: list[Message] = []
        self.reads = reads
        self.left = asyncio.Event()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not self.reads:
            await asyncio.Event().wait()  # a full socket that never drains
        self.sent.append(message)

    async def receive(self) -> Message:
        await self.left.wait()
        return {"type": "http.disconnect"}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])

    @property
    def completed(self) -> bool:
        last = self.sent[-1]
        return last["type"] == "http.response.body" and not last.get("more_body", False)


class Chunks:
    def __init__(self, *chunks: bytes, then_wait: bool = False, fail: bool = False) -> None:
        self.chunks = chunks
        self.then_wait = then_wait
        self.fail = fail
        self.closed = False

    async def __call__(self) -> AsyncGenerator[bytes, None]:
        try:
            for chunk in self.chunks:
                yield chunk
            if self.fail:
                raise RuntimeError("boom")
            if self.then_wait:
                await asyncio.Event().wait()
        finally:
            self.closed = True


async def _respond(chunks: Chunks, client: Client, slot: StreamSlot) -> None:
    response = EventStreamResponse(chunks(), slot, send_timeout=0.05)
    scope = {"type": "http", "method": "GET"}
    await response(scope, client.receive, client.send)


async def test_send_within_gives_up_on_a_client_that_takes_nothing() -> None:
    with pytest.raises(SlowClient):
        await send_within(Client(reads=False).send, {"type": "http.response.body"}, 0.01)


async def test_a_stream_sends_its_chunks_then_completes_the_response() -> None:
    registry, client, chunks = StreamRegistry(), Client(), Chunks(b"a", b"b")
    slot = registry.open("key", 1)
    assert slot is not None
    await _respond(chunks, client, slot)
    start = client.sent[0]
    assert start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"content-type"].startswith(b"text/event-stream")
    assert headers[b"cache-control"] == b"no-cache"
    assert b"content-length" not in headers
    assert client.body == b"ab"
    assert client.completed
    assert chunks.closed
    assert registry.count("key") == 0


async def test_a_slow_client_is_dropped_alone_and_its_place_freed() -> None:
    registry, chunks = StreamRegistry(), Chunks(b"a", then_wait=True)
    slow_slot, other_slot = registry.open("key", 2), registry.open("key", 2)
    assert slow_slot is not None
    assert other_slot is not None
    slow, other = Client(reads=False), Client()
    other_stream = asyncio.create_task(_respond(Chunks(b"x", then_wait=True), other, other_slot))
    await _respond(chunks, slow, slow_slot)  # returns: the send timed out
    assert not slow.completed  # unfinished: the server closes the connection
    assert chunks.closed
    assert registry.count("key") == 1
    assert not other_stream.done()
    other.left.set()
    await other_stream
    assert other.body == b"x"
    assert registry.count("key") == 0


async def test_a_client_that_leaves_ends_the_stream() -> None:
    registry, client, chunks = StreamRegistry(), Client(), Chunks(b"a", then_wait=True)
    slot = registry.open("key", 1)
    assert slot is not None
    client.left.set()
    await _respond(chunks, client, slot)
    assert chunks.closed
    assert registry.count("key") == 0


async def test_closing_all_streams_completes_their_responses() -> None:
    registry, client, chunks = StreamRegistry(), Client(), Chunks(b"a", then_wait=True)
    slot = registry.open("key", 1)
    assert slot is not None
    stream = asyncio.create_task(_respond(chunks, client, slot))
    assert registry.close_all() == 1
    await stream
    assert client.body == b"a"
    assert client.completed
    assert chunks.closed


async def test_a_failing_stream_is_logged_and_completed() -> None:
    registry, client, chunks = StreamRegistry(), Client(), Chunks(b"a", fail=True)
    slot = registry.open("key", 1)
    assert slot is not None
    await _respond(chunks, client, slot)
    assert client.body == b"a"
    assert client.completed


async def test_streams_are_capped_per_key_and_release_is_idempotent() -> None:
    registry = StreamRegistry()
    first, second = registry.open("a", 2), registry.open("a", 2)
    assert first is not None
    assert second is not None
    assert registry.open("a", 2) is None
    assert registry.open("b", 2) is not None
    first.release()
    first.release()
    assert registry.count("a") == 1
    assert registry.open("a", 2) is not None


@pytest.fixture
def _signal_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.usefixtures("_signal_handlers")
async def test_a_termination_signal_ends_open_streams_then_reaches_the_server() -> None:
    received: list[int] = []

    def server_handler(sig: int, frame: FrameType | None) -> None:  # uvicorn's, in life
        received.append(sig)

    signal.signal(signal.SIGTERM, server_handler)
    assert install_shutdown_signals()
    slot = streams.open("signal-test", 1)
    assert slot is not None
    try:
        signal.raise_signal(signal.SIGTERM)
        async with asyncio.timeout(5):
            await slot.stop.wait()
    finally:
        slot.release()
    assert received == [signal.SIGTERM]


# -- the sync stream's events --------------------------------------------------------


def _page(*ids: str, cursor: str, has_more: bool = False) -> SyncPage:
    changes = [{"entity": "entry", "id": i, "op": "upsert"} for i in ids]
    return SyncPage(changes, cursor, has_more)


class Source:
    """The world as a stream sees it: scripted pages, a projection that has
    always moved on, and an authorisation that may run out."""

    def __init__(self, *pages: SyncPage | Exception, moves: bool = True) -> None:
        self.pages = list(pages)
        self.moves = moves
        self.allowed = True
        self.cursors: list[str] = []
        self.calls: list[str] = []

    def position(self) -> int:
        return 7

    async def wait_past(self, position: int, within: float) -> bool:
        self.calls.append("wait")
        return self.moves

    async def pull(self, cursor: str) -> SyncPage:
        self.calls.append("pull")
        self.cursors.append(cursor)
        page = self.pages.pop(0)
        if isinstance(page, Exception):
            raise page
        return page

    async def still_allowed(self) -> bool:
        self.calls.append("check")
        return self.allowed


async def _take(events: AsyncGenerator[bytes, None], count: int) -> list[bytes]:
    taken = [await anext(events) for _ in range(count)]
    await events.aclose()
    return taken


async def test_pages_with_changes_become_changes_events_with_the_cursor_as_id() -> None:
    source = Source(_page(cursor="c2"), _page("e2", cursor="c3"))
    events = sync_events(source, _page("e1", cursor="c1", has_more=True), seen=0)
    retry, first, second = await _take(events, 3)
    assert retry.startswith(b"retry: ")
    assert first.startswith(b"event: changes\nid: c1\ndata: ")
    assert orjson.loads(first.split(b"data: ", 1)[1]) == {
        "changes": [{"entity": "entry", "id": "e1", "op": "upsert"}],
        "cursor": "c1",
        "has_more": True,
    }
    # An empty page sends nothing, but the stream continues from its cursor.
    assert second.startswith(b"event: changes\nid: c3\n")
    assert source.cursors == ["c1", "c2"]


async def test_the_key_is_checked_before_waiting_never_between_a_wake_and_its_pull() -> None:
    source = Source(_page("e2", cursor="c2"), _page("e3", cursor="c3"))
    await _take(sync_events(source, _page(cursor="c1"), seen=0), 3)
    assert source.calls == ["check", "wait", "pull", "check", "wait", "pull"]


async def test_silence_sends_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync_stream, "HEARTBEAT_SECONDS", 0.0)
    events = sync_events(Source(moves=False), _page(cursor="c1"), seen=0)
    assert (await _take(events, 3))[1:] == [b": heartbeat\n\n"] * 2


async def test_an_expired_cursor_resets_and_ends_the_stream() -> None:
    events = sync_events(Source(CursorExpired(9)), _page(cursor="c1"), seen=0)
    chunks = [chunk async for chunk in events]
    assert chunks[1:] == [b'event: reset\ndata: {"code":"CURSOR_EXPIRED","reset":true}\n\n']


async def test_a_stream_whose_key_is_no_longer_valid_ends() -> None:
    source = Source(_page("e2", cursor="c2"))
    source.allowed = False
    chunks = [chunk async for chunk in sync_events(source, _page(cursor="c1"), seen=0)]
    assert len(chunks) == 1  # only the retry hint
    assert source.cursors == []


# -- the shared projection watch -----------------------------------------------------


class Positions:
    """ProjectionPositions' interface: its wait_for polls the database, so the
    watch must run it once for all waiters."""

    def __init__(self) -> None:
        self.value = 5
        self.moved = asyncio.Event()
        self.waiting = asyncio.Event()
        self.calls = 0
        self.concurrent = 0
        self.most_concurrent = 0

    def position(self, projection: str) -> int:
        return self.value

    async def wait_for(self, projection: str, position: int, within: float) -> bool:
        self.calls += 1
        self.waiting.set()
        self.concurrent += 1
        self.most_concurrent = max(self.most_concurrent, self.concurrent)
        try:
            async with asyncio.timeout(within):
                while self.value < position:
                    await self.moved.wait()
                    self.moved = asyncio.Event()
            return True
        except TimeoutError:
            return False
        finally:
            self.concurrent -= 1

    def advance(self) -> None:
        self.value += 1
        self.moved.set()


async def test_many_waiters_share_one_wait_and_all_wake_on_a_change() -> None:
    positions = Positions()
    changes = ProjectionChanges(positions, "sync")  # type: ignore[arg-type]
    assert await changes.wait_past(4, 0)  # already past: no waiting
    waiters = [asyncio.create_task(changes.wait_past(5, 10)) for _ in range(50)]
    await positions.waiting.wait()  # the watch has started waiting
    positions.advance()
    assert await asyncio.gather(*waiters) == [True] * 50
    assert positions.most_concurrent == 1


async def test_a_wait_without_change_times_out() -> None:
    changes = ProjectionChanges(Positions(), "sync")  # type: ignore[arg-type]
    assert await changes.wait_past(5, 0.01) is False


def test_default_settings() -> None:
    settings: dict[str, Any] = {
        "HEARTBEAT_SECONDS": 15.0,
        "SEND_TIMEOUT_SECONDS": 10.0,
        "MAX_STREAMS_PER_KEY": 5,
        "STREAM_PAGE_LIMIT": 500,
    }
    assert {name: getattr(sync_stream, name) for name in settings} == settings
