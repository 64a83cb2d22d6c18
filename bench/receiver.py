"""A fast webhook receiver for benchmarks: raw HTTP/1.1 with keep-alive on
``asyncio.start_server`` (uvloop), in its own process, so neither the sender
under test nor the baseline shares its interpreter with it.

Every POST is answered 204 at once; its path, ``webhook-id`` and arrival time
(``time.time()``) are recorded. Control requests, answered with JSON:

- ``GET /_count``: ``{"unique": n, "total": n}`` ((path, webhook-id) pairs, requests)
- ``GET /_dump``: ``[[path, webhook_id, first_arrival], ...]``
- ``POST /_reset``: forget everything recorded

    python -m bench.receiver        # prints its port on the first line of stdout
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Final

import httpx
import orjson
import uvloop

__all__ = ["RemoteReceiver", "running_receiver"]

NO_CONTENT: Final = b"HTTP/1.1 204 No Content\r\n\r\n"
MAX_HEAD: Final = 65_536


class Recorder:
    def __init__(self) -> None:
        self.first: dict[tuple[str, str], float] = {}
        self.total = 0

    def record(self, path: str, webhook_id: str, at: float) -> None:
        self.total += 1
        self.first.setdefault((path, webhook_id), at)

    def control(self, method: str, path: str) -> bytes:
        if path == "/_count":
            body = orjson.dumps({"unique": len(self.first), "total": self.total})
        elif path == "/_dump":
            body = orjson.dumps([[p, i, t] for (p, i), t in self.first.items()])
        elif path == "/_reset" and method == "POST":
            self.first.clear()
            self.total = 0
            body = b"{}"
        else:
            return b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
        head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
        return head.encode() + b"\r\n\r\n" + body


def _parse_head(head: bytes) -> tuple[str, str, int, str, bool]:
    """(method, path, content-length, webhook-id, connection: close)."""
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    length, webhook_id, close = 0, "", False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        match name.strip().lower():
            case "content-length":
                length = int(value)
            case "webhook-id":
                webhook_id = value.strip()
            case "connection":
                close = value.strip().lower() == "close"
    return method, path, length, webhook_id, close


async def _serve(
    recorder: Recorder, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            arrived = time.time()
            method, path, length, webhook_id, close = _parse_head(head)
            if length:
                await reader.readexactly(length)
            if path.startswith("/_"):
                writer.write(recorder.control(method, path))
            else:
                recorder.record(path, webhook_id, arrived)
                writer.write(NO_CONTENT)
            await writer.drain()
            if close:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def _main() -> None:
    recorder = Recorder()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve(recorder, reader, writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0, limit=MAX_HEAD, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


class RemoteReceiver:
    """The bench's handle on a receiver process."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._control = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self) -> tuple[int, int]:
        got = self._control.get("/_count").json()
        return int(got["unique"]), int(got["total"])

    def dump(self) -> dict[tuple[str, str], float]:
        return {(p, i): float(t) for p, i, t in self._control.get("/_dump").json()}

    def reset(self) -> None:
        self._control.post("/_reset").raise_for_status()

    def wait_for(self, unique: int, *, timeout: float, poll: float = 0.02) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count()[0] >= unique:
                return True
            time.sleep(poll)
        return False

    def close(self) -> None:
        self._control.close()


@contextlib.contextmanager
def running_receiver() -> Iterator[RemoteReceiver]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.receiver"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        receiver = RemoteReceiver(int(process.stdout.readline()))
        try:
            yield receiver
        finally:
            receiver.close()
    finally:
        process.terminate()
        process.wait(timeout=10)


if __name__ == "__main__":
    uvloop.run(_main())
