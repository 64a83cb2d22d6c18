"""Tracing end to end: a real `chronik api` and `chronik worker`, tracing on,
export OTLP/HTTP to a collector in this test. One command that causes a webhook
delivery makes one trace: the API's server span, the command, the append,
projections, the relay's publish, the webhook consumer and the delivery's POST.
The NATS message carries the correlation id and the trace context."""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.js.api import RawStreamMsg
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from infra.devstack.processes import ServerProcess, free_port, wait_until
from infra.event_stream import event_subject
from infra.messaging import stream_name
from infra.settings import Settings
from tests.projection_support import wait_caught_up
from tests.webhook_receivers import receiver

OPERATOR_TOKEN = "operator-token-for-tracing-tests"
CORRELATION_ID = "corr-tracing-e2e-1"
# A client's own trace: the API continues it, so the test knows the id up front.
CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
SERVER = 2  # the protobuf's SpanKind values
CLIENT = 3
PRODUCER = 4
CONSUMER = 5


@dataclass(frozen=True, slots=True)
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]  # (trace id, span id)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@dataclass
class Collector:
    """An OTLP/HTTP traces endpoint: decodes every export into spans."""

    port: int = 0
    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        Span(
                            service=resource["service.name"],
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            links=tuple((k.trace_id.hex(), k.span_id.hex()) for k in span.links),
                        )
                    )
        with self.lock:
            self.spans += found

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def all(self) -> list[Span]:
        with self.lock:
            return list(self.spans)


@contextmanager
def collector() -> Iterator[Collector]:
    target = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            status = 200 if self.path == "/v1/traces" else 404
            if status == 200:
                target.take(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    target.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield target
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def chronik(settings: Settings, otlp: Collector, logs: Path) -> Iterator[str]:
    """`chronik api` and `chronik worker`, tracing on; yields the API's URL."""
    port = free_port()
    env = {
        **os.environ,
        "CHRONIK_DATABASE_URL": settings.database_url_value(),
        "CHRONIK_NATS_URL": settings.nats_url or "",
        "CHRONIK_NATS_NAMESPACE": settings.nats_namespace,
        "CHRONIK_HTTP_PORT": str(port),
        "CHRONIK_HTTP_WORKERS": "1",
        "CHRONIK_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "CHRONIK_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "CHRONIK_PROJECTION_POLL_INTERVAL": "0.2",
        "CHRONIK_LOG_LEVEL": "WARNING",
        "CHRONIK_TRACING": "otlp",
        "CHRONIK_OTLP_ENDPOINT": otlp.url,
        # Export every 100 ms instead of every 5 s: the test waits for the spans.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    processes = []
    try:
        for role in ("api", "worker"):
            processes.append(
                ServerProcess(
                    f"chronik {role}",
                    [sys.executable, "-m", "infra.cli", role],
                    log_path=logs / f"{role}.log",
                    stop_signal=signal.SIGTERM,
                    env=env,
                )
            )
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert all(p.running() for p in processes), _tails(logs)
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=60, what="the API serving")
        yield base
    finally:
        for process in processes:
            process.stop()


def _tails(logs: Path) -> str:
    return "\n".join(f"{p.name}: {p.read_text()[-2000:]}" for p in sorted(logs.glob("*.log")))


def _published(settings: Settings, team_id: str) -> RawStreamMsg:
    async def last() -> RawStreamMsg:
        client = await nats.connect(settings.nats_url or "", connect_timeout=2)
        try:
            return await client.jetstream().get_last_msg(
                stream_name(settings, "events"), event_subject(settings, team_id, "entry.created")
            )
        finally:
            await client.close()

    return asyncio.run(last())


def _one(spans: list[Span], what: str, **match: Any) -> Span:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    names = sorted(f"{s.service}: {s.name}" for s in spans)
    assert len(found) == 1, f"{what}: {len(found)} spans match {match}; the trace has {names}"
    return found[0]


def _ancestors(spans: list[Span], span: Span) -> list[str]:
    by_id = {s.span_id: s for s in spans}
    chain = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        chain.append(span.span_id)
    return chain


def test_one_trace_follows_a_command_to_its_webhook_delivery(
    settings: Settings, tmp_path: Path
) -> None:
    with collector() as otlp, receiver() as hooks, chronik(settings, otlp, tmp_path) as base:
        with httpx.Client(base_url=base, timeout=30) as http:
            created = http.post(
                "/v1/teams",
                json={"name": "Traced", "plan": "team", "owner_email": "o@example.com"},
                headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
            )
            assert created.status_code == 201, created.text
            team = created.json()["data"]
            owner = {"Authorization": f"Bearer {team['owner_key']}"}
            registered = http.post(
                f"/v1/teams/{team['id']}/webhooks",
                json={"url": hooks.url, "event_types": ["entry.created"], "description": "t"},
                headers=owner,
            )
            assert registered.status_code == 201, registered.text
            # Projections trace only once they serve reads (a generation being
            # built replays history): wait for the ones asserted on below.
            for name in ("event_feed", "entries", "webhooks"):
                wait_caught_up(settings.database_url_value(), name, timeout=60)
            entry = http.post(
                f"/v1/teams/{team['id']}/entries",
                json={"title": "traced", "body": "", "tags": [], "visibility": "team"},
                headers={
                    **owner,
                    "X-Correlation-Id": CORRELATION_ID,
                    "traceparent": f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01",
                },
            )
            assert entry.status_code == 201, entry.text
            entry_id = entry.json()["data"]["id"]

        wait_until(lambda: len(hooks.received()) >= 1, timeout=60, what="the webhook delivery")
        assert hooks.received()[0].doc["aggregate_id"] == entry_id

        # Each process exports in batches of its own, so the API's spans may
        # arrive after the worker's: wait for every stage of both.
        route = "POST /v1/teams/{team_id}/entries"
        stages = {
            route,
            "command CreateEntry",
            "event_store append",
            "projection event_feed",
            "publish entry.created",
            "webhooks receive",
            "webhook POST",
        }

        def traced_through() -> bool:
            in_trace = otlp.trace(CLIENT_TRACE_ID)
            appends = {s.span_id for s in in_trace if s.name == "event_store append"}
            linked = {
                span_id
                for s in otlp.all()
                if s.name == "group_commit transaction"
                for trace_id, span_id in s.links
                if trace_id == CLIENT_TRACE_ID
            }
            return stages <= {s.name for s in in_trace} and bool(appends & linked)

        wait_until(traced_through, timeout=30, what="every stage's span exported")
        spans = otlp.trace(CLIENT_TRACE_ID)

    # The API: the server span (FastAPI's) continues the client's, the command
    # runs in it (under FastAPI's endpoint span), the append in the command.
    server = _one(spans, "server span", name=route, service="chronik-api")
    assert (server.kind, server.parent_id) == (SERVER, CLIENT_SPAN_ID)
    assert server.attributes["http.route"] == "/v1/teams/{team_id}/entries"
    assert server.attributes["http.response.status_code"] == 201
    assert server.attributes["chronik.request_id"] == entry.headers["X-Request-Id"]
    command = _one(spans, "command span", name="command CreateEntry")
    assert server.span_id in _ancestors(spans, command)
    assert command.attributes["chronik.correlation_id"] == CORRELATION_ID
    append = _one(spans, "append span", name="event_store append")
    assert append.parent_id == command.span_id
    # The shared group-commit transaction is a trace of its own, linked to the append.
    transactions = [
        s for s in otlp.all() if s.name == "group_commit transaction" and s.service == "chronik-api"
    ]
    assert any((CLIENT_TRACE_ID, append.span_id) in s.links for s in transactions)

    # The worker continues the context stored with the events.
    projections = [s for s in spans if s.name.startswith("projection ")]
    assert {s.service for s in projections} == {"chronik-worker"}
    assert {"projection event_feed", "projection entries"} <= {s.name for s in projections}
    assert all(s.parent_id == append.span_id for s in projections)
    publish = _one(spans, "relay span", name="publish entry.created")
    assert (publish.kind, publish.parent_id) == (PRODUCER, append.span_id)
    receive = _one(spans, "consumer span", name="webhooks receive")
    assert (receive.kind, receive.parent_id) == (CONSUMER, publish.span_id)
    assert receive.attributes["chronik.correlation_id"] == CORRELATION_ID
    post = _one(spans, "delivery span", name="webhook POST")
    assert (post.kind, post.parent_id) == (CLIENT, append.span_id)
    assert post.attributes["http.response.status_code"] == 204
    assert post.attributes["server.address"] == "127.0.0.1"

    # The message on the stream carried the correlation id and the relay's context.
    message = _published(settings, team["id"])
    assert message.headers is not None
    assert message.headers["Chronik-Correlation-Id"] == CORRELATION_ID
    assert message.headers["traceparent"] == f"00-{CLIENT_TRACE_ID}-{publish.span_id}-01"
    # The receiver (a third party) gets no trace context of ours.
    assert "traceparent" not in hooks.received()[0].headers
    # The start-up's health probes made no traces.
    assert not [s for s in otlp.all() if s.attributes.get("url.path") == "/healthz"]
