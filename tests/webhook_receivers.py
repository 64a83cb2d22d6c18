"""Real HTTP webhook receivers on loopback, scripted per test.

Each receiver records every request it gets (headers, body, when) and answers
what its script says: by default 204; ``fail_first=N`` answers 500 to the
first N requests of each webhook-id; ``status=410`` always answers that;
``delay`` makes every answer that slow; ``answer_headers`` are sent with every
answer (e.g. ``{"Retry-After": "1"}``); ``body_size=N`` answers with a body of N
bytes, written ``body_chunk`` bytes at a time with ``body_chunk_delay`` seconds
between chunks, and records in ``bodies`` how much of each body was written
before the client hung up (or all of it).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from standardwebhooks import Webhook

__all__ = ["BodyWritten", "Received", "Receiver", "receiver"]


@dataclass(frozen=True, slots=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when it arrived

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = orjson.loads(self.body)
        return doc


@dataclass
class Receiver:
    port: int
    status: int = 204
    fail_first: int = 0
    delay: float = 0.0  # seconds before answering (a slow receiver)
    answer_headers: dict[str, str] = field(default_factory=dict)
    body_size: int = 0
    body_chunk: int = 65_536
    body_chunk_delay: float = 0.0
    bodies: list[BodyWritten] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    cut_off: list[bytes] = field(default_factory=list)  # requests whose sender died mid-body
    lock: threading.Lock = field(default_factory=threading.Lock)
    _seen: Counter[str] = field(default_factory=Counter)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            self.requests.append(Received(headers, body, time.time()))
            webhook_id = headers.get("webhook-id", "")
            self._seen[webhook_id] += 1
            if self._seen[webhook_id] <= self.fail_first:
                return 500
            return self.status

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    def ids(self) -> set[str]:
        return {r.webhook_id for r in self.received()}

    def verified_docs(self, secret: str) -> list[dict[str, Any]]:
        """Every body, each checked with the Standard Webhooks reference library."""
        webhook = Webhook(secret)
        docs = []
        for r in self.received():
            verified = webhook.verify(r.body, r.headers)
            docs.append(verified)
        return docs


@dataclass(frozen=True, slots=True)
class BodyWritten:
    """How much of one answer's body was written."""

    written: int
    complete: bool  # False: the client hung up first


def _write_body(wfile: Any, target: Receiver) -> BodyWritten:
    chunk = b"x" * target.body_chunk
    written = 0
    try:
        while written < target.body_size:
            piece = chunk[: target.body_size - written]
            wfile.write(piece)
            written += len(piece)
            if target.body_chunk_delay:
                time.sleep(target.body_chunk_delay)  # a slowly generated body, by design
    except OSError:  # broken pipe, connection reset: the client stopped reading
        return BodyWritten(written, complete=False)
    return BodyWritten(written, complete=True)


def _handler(target: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            if len(body) < length:
                # The sender died mid-request: no receiver can verify this, so
                # it is not a delivery; kept apart for the tests that kill one.
                with target.lock:
                    target.cut_off.append(body)
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = target.answer(headers, body)
            if target.delay:
                time.sleep(target.delay)  # a slow receiver, by design
            self.send_response(status)
            for name, value in target.answer_headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(target.body_size))
            self.end_headers()
            if target.body_size:
                written = _write_body(self.wfile, target)
                with target.lock:
                    target.bodies.append(written)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the test asserts on what was received

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog: the standard library's 5 overflows when delivery
    # workers open a hundred connections at once, and the connections the
    # kernel then drops fail as the workers' read errors.
    request_queue_size = 1024


@contextmanager
def receiver(**script: Any) -> Iterator[Receiver]:
    target = Receiver(port=0, **script)
    server = _Server(("127.0.0.1", 0), _handler(target))
    target.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield target
    finally:
        server.shutdown()
        server.server_close()
