"""A webhook receiver that verifies Chronik's Standard Webhooks signatures.

Standard library only. Run it, register its URL with the secret Chronik answers,
and it prints one JSON line per verified delivery (the event's id, type,
position and data) and answers 204; a bad or stale signature gets 401 and is
not printed. ``--count N`` exits after N verified deliveries (the README tour
uses it); duplicates (the same ``webhook-id`` again) are answered but counted
once.

    python examples/webhook_receiver.py --port 8088 --secret whsec_...

Chronik refuses loopback addresses unless ``CHRONIK_WEBHOOK_ALLOWED_NETWORKS``
allows them (see the README tour and docs/webhooks.md).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["TOLERANCE_SECONDS", "main", "verify"]

TOLERANCE_SECONDS = 5 * 60  # older (or newer) timestamps may be replays


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> bool:
    """Whether ``body`` was signed with ``secret`` (``whsec_...``) recently.

    ``headers`` with lower-case names. Any one of the space-separated
    signatures may match: during a secret rotation Chronik sends two.
    """
    try:
        msg_id = headers["webhook-id"]
        timestamp = int(headers["webhook-timestamp"])
        signatures = headers["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > TOLERANCE_SECONDS:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(digest).decode()
    # Constant-time comparison: a timing difference would leak the signature.
    return any(hmac.compare_digest(s, expected) for s in signatures)


class _Receiver(ThreadingHTTPServer):
    def __init__(self, port: int, secret: str, count: int | None) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.secret = secret
        self.remaining = count
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def accept(self, msg_id: str, event: dict[str, Any]) -> None:
        with self.lock:
            if msg_id in self.seen:  # at least once: a retry may repeat a delivery
                return
            self.seen.add(msg_id)
            line = {k: event.get(k) for k in ("id", "type", "position", "team_id", "data")}
            print(json.dumps(line), flush=True)
            if self.remaining is not None:
                self.remaining -= 1
                if self.remaining <= 0:
                    # shutdown() waits for serve_forever(), which runs in another thread.
                    threading.Thread(target=self.shutdown).start()


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {name.lower(): value for name, value in self.headers.items()}
        # Verify the raw bytes before parsing them.
        if not verify(self.server.secret, headers, body):
            self.send_response(401)
            self.end_headers()
            return
        # Answer first, quickly; a slow answer counts as a failure and is retried.
        self.send_response(204)
        self.end_headers()
        self.server.accept(headers["webhook-id"], json.loads(body))

    def log_message(self, format: str, *args: Any) -> None:
        pass  # stdout is for the events


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8088, help="port on 127.0.0.1")
    parser.add_argument(
        "--secret",
        default=os.environ.get("WEBHOOK_SECRET"),
        help="the endpoint's whsec_ secret (default: $WEBHOOK_SECRET)",
    )
    parser.add_argument("--count", type=int, default=None, help="exit after N deliveries")
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("--secret (or WEBHOOK_SECRET) is required")
    with _Receiver(args.port, args.secret, args.count) as server:
        print(f"listening on http://127.0.0.1:{args.port}/", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
