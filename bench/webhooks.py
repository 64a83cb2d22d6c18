"""Webhook fan-out benchmarks (B5), each against a baseline measured in the same run.

Throughput: a burst of N entry creations (committed 500 per transaction, as
   bench.common seeds a log) to 1 endpoint, then to 5 (N x 5 deliveries): time
   from the burst's first commit until the receiver has every webhook-id.
   Baseline: the same POSTs (same URLs, bodies and signed headers) sent
   straight from one plain aiohttp session (the delivery worker's HTTP
   client) at the delivery worker's concurrency.
Latency: create_entry at a steady offered rate from a separate process (8
   writer threads, one team and one endpoint each); commit -> receiver per
   event, and split into commit -> in the stream (a plain NATS subscriber on
   the events subject) -> delivery row (webhook_deliveries.created_at) ->
   received. Baseline: a plain JetStream publish -> push subscribe round trip.

The "worker" runs in this process as `chronik worker` runs it: every
projection and the fan-out (relay, webhook consumer, delivery worker), plus
this script's NATS subscriber and the aiohttp baseline. The receiver (raw
asyncio HTTP/1.1, keep-alive: bench/receiver.py) and the latency writers are
separate processes; all share this machine's cores with PostgreSQL and NATS.
Each scenario gets a fresh database and its own NATS namespace.

    python -m bench.webhooks [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import multiprocessing
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_network
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import httpx
import nats
import psycopg
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import StorageType, StreamConfig
from pydantic import SecretStr

from aggregates.base import Actor
from bench.common import fresh_database, run_and_report
from bench.receiver import RemoteReceiver, running_receiver
from commands.context import CommandContext
from commands.entries import create_entry
from commands.models import CreateEntry, RegisterWebhook
from commands.webhooks import register_webhook
from infra.db import PostgresTarget
from infra.devstack.processes import wait_until
from infra.event_store import EventStore, head_position, open_event_store
from infra.event_stream import all_events_subject
from infra.logging import configure_logging
from infra.messaging import stream_name, subject_prefix
from infra.outbound import check_webhook_target
from infra.settings import Settings
from infra.signing import webhook_headers
from tests.projection_support import TeamFixture, create_team, seed_entries

Result = dict[str, Any]

LOOPBACK: Final = ip_network("127.0.0.0/8")
BODY: Final = "x" * 200  # the seeded entries' body, for the latency writers too
WRITERS: Final = 8
TARGET_P99_MS: Final = 250.0
TARGET_RATE: Final = 500
MS: Final = 1000.0
FLOOR_POSTS: Final = 3_000


def _scenario_settings(settings: Settings) -> Settings:
    """A fresh database and a NATS namespace of its own (so its stream,
    duplicate window and durable consumer start empty)."""
    return settings.model_copy(
        update={
            "database_url": SecretStr(fresh_database(settings)),
            "nats_namespace": f"bench_{uuid.uuid4().hex[:8]}",
            "webhook_allowed_networks": [LOOPBACK],
        }
    )


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _pct(values: Sequence[float], q: int) -> float:
    """The q-th percentile in ms (q=100: the max)."""
    if q == 100:
        return round(max(values) * MS, 1)
    if len(values) < 2:
        return round(values[0] * MS, 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1] * MS, 1)


# --- the stream tap: a plain NATS subscriber on the events subject -----------


class StreamTap:
    """Records when each event (by Nats-Msg-Id) passes through NATS; deletes
    the scenario's stream when stopped."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.arrivals: dict[str, float] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tap", daemon=True)
        self._client: NatsClient | None = None

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._connect(), self._loop).result(30)

    async def _connect(self) -> None:
        self._client = await nats.connect(self._settings.nats_url or "", name="bench-tap")
        await self._client.subscribe(all_events_subject(self._settings), cb=self._arrived)
        await self._client.flush()

    async def _arrived(self, msg: Msg) -> None:
        headers = msg.headers or {}
        self.arrivals.setdefault(headers.get("Nats-Msg-Id", ""), time.time())

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _close(self) -> None:
        if self._client is None:
            return
        with contextlib.suppress(Exception):  # never declared if nothing was relayed
            await self._client.jetstream().delete_stream(stream_name(self._settings, "events"))
        await self._client.close()


# --- the worker under test, in this process -----------------------------------


@dataclass
class Worker:
    settings: Settings
    store: EventStore
    tap: StreamTap
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)  # path -> whsec_ secret

    @property
    def url(self) -> str:
        return self.settings.database_url_value()

    def register(self, team: TeamFixture, receiver: RemoteReceiver, path: str) -> None:
        guard = functools.partial(check_webhook_target, allowed=[LOOPBACK])
        command = RegisterWebhook(url=receiver.url(path), description="bench receiver")
        registered = register_webhook(
            self.store, CommandContext(actor=team.owner), command, url_guard=guard
        )
        self.secrets[path] = registered.data["secret"]

    def warm_up(self, teams: Sequence[TeamFixture]) -> None:
        """One entry per team through every stage, then nothing pending: the
        projections are live and each endpoint has a connection."""
        ids = [
            create_entry(
                self.store, CommandContext(actor=t.owner), CreateEntry(title="warm-up")
            ).data["id"]
            for t in teams
        ]

        def settled() -> bool:
            with psycopg.connect(self.url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE status <> 'succeeded'),"
                    " count(*) FILTER (WHERE status = 'succeeded'"
                    "   AND (body::jsonb)->>'aggregate_id' = ANY (%s))"
                    " FROM webhook_deliveries",
                    (ids,),
                ).fetchone()
            return row is not None and row[0] == 0 and row[1] >= len(ids)

        wait_until(settled, timeout=120, what="the warm-up deliveries")


@contextlib.contextmanager
def running_worker(settings: Settings) -> Iterator[Worker]:
    """`chronik worker --only projections` and `chronik worker --only fanout`,
    each a process of its own (as a deployment on 2 cores would run them); this
    process only writes commands and taps the stream."""
    store = open_event_store(
        PostgresTarget.from_url(settings.database_url_value()), pool_size=settings.db_pool_size
    )
    tap = StreamTap(settings)
    tap.start()
    processes = [_worker_process(settings, role) for role in ("projections", "fanout")]
    try:
        yield Worker(settings, store, tap, processes=processes)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)
        store.close()
        tap.stop()


def _worker_process(settings: Settings, role: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CHRONIK_DATABASE_URL": settings.database_url_value(),
        "CHRONIK_NATS_URL": settings.nats_url or "",
        "CHRONIK_NATS_NAMESPACE": settings.nats_namespace,
        "CHRONIK_WEBHOOK_ALLOWED_NETWORKS": ",".join(map(str, settings.webhook_allowed_networks)),
        "CHRONIK_WEBHOOK_CONCURRENCY": str(settings.webhook_concurrency),
        "CHRONIK_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
        [sys.executable, "-m", "infra.cli", "worker", "--only", role],
        env=env,
        stdout=subprocess.DEVNULL,
    )


def _peak_rss_of(processes: Sequence[subprocess.Popen[bytes]]) -> dict[str, float]:
    """Peak resident memory (VmHWM) of each worker process, in MB."""
    peaks = {}
    for process, role in zip(processes, ("projections", "fanout"), strict=True):
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks[role] = round(int(line.split()[1]) / 1024, 1)
    return peaks


# --- throughput ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Post:
    url: str
    body: bytes
    headers: dict[str, str]


def _delivered_rows(url: str, after: int) -> list[tuple[str, str, str, float]]:
    """(endpoint url, event id, body, created_at epoch) of the deliveries of
    events after ``after``."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT w.url, d.event_id, d.body, extract(epoch FROM d.created_at)::float8"
            " FROM webhook_deliveries d JOIN reads.webhooks w ON w.id = d.endpoint_id"
            " WHERE d.position > %s ORDER BY d.id",
            (after,),
        ).fetchall()


def throughput(
    settings: Settings, receiver: RemoteReceiver, events: int, endpoints: int
) -> tuple[Result, list[Post]]:
    settings = _scenario_settings(settings)
    with running_worker(settings) as worker:
        team = create_team(worker.store)
        paths = [f"/burst{endpoints}/{k}" for k in range(endpoints)]
        for path in paths:
            worker.register(team, receiver, path)
        worker.warm_up([team])
        receiver.reset()
        before = head_position_of(worker.url)
        started = time.time()
        seed_entries(worker.store, team.owner, events, per_save=500)
        committed = time.time()
        expected = events * endpoints
        complete = receiver.wait_for(expected, timeout=max(300.0, expected / 20))
        arrivals = receiver.dump()
        unique, total = receiver.count()
        rows = _delivered_rows(worker.url, before)
        stream_ids = {event_id for _, event_id, _, _ in rows}
        in_stream = [t for i, t in worker.tap.arrivals.items() if i in stream_ids]
        rss = _peak_rss_of(worker.processes)
    last = max(arrivals.values())
    elapsed = last - started
    posts = []
    timestamp = int(time.time())
    for url, event_id, body, _ in rows:
        data = body.encode()
        secret = worker.secrets[urlsplit(url).path]
        posts.append(Post(url, data, webhook_headers([secret], event_id, timestamp, data)))
    rate = unique / elapsed
    baseline = baseline_posts(receiver, posts, settings.webhook_concurrency)
    return {
        "scenario": f"B5 throughput: {events:,} events to {endpoints} endpoint(s)",
        "deliveries": expected,
        "received_all": "yes" if complete else f"NO: {unique:,} before the timeout",
        "deliveries_per_s": round(rate),
        "baseline_aiohttp_posts_per_s": round(baseline),
        "ratio_to_baseline": round(rate / baseline, 3),
        "burst_committed_s": round(committed - started, 2),
        "last_in_stream_s": round(max(in_stream) - started, 2) if in_stream else None,
        "last_delivery_row_s": round(max(r[3] for r in rows) - started, 2),
        "last_received_s": round(elapsed, 2),
        "repeated_posts": total - unique,
        "concurrency": settings.webhook_concurrency,
        "worker_peak_rss_mb": rss,  # per process
    }, posts


def head_position_of(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return head_position(conn)


def baseline_posts(receiver: RemoteReceiver, posts: list[Post], concurrency: int) -> float:
    """POSTs/s of the same requests from a plain aiohttp session with as many
    requests in flight as the delivery worker."""
    receiver.reset()
    warm = [Post(receiver.url("/warm"), b"{}", {"webhook-id": f"w{n}"}) for n in range(256)]
    elapsed = asyncio.run(_send_all(warm, posts, concurrency))
    unique, _ = receiver.count()
    if unique != len(warm) + len(posts):
        raise RuntimeError(f"the baseline delivered {unique - len(warm):,} of {len(posts):,}")
    return len(posts) / elapsed


async def _send_all(warm: list[Post], posts: list[Post], concurrency: int) -> float:
    """Sends ``warm`` (connections up, as the worker's are), then times ``posts``,
    ``concurrency`` requests in flight over one aiohttp session."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:

        async def send(post: Post) -> int:
            async with session.post(post.url, data=post.body, headers=post.headers) as r:
                await r.read()
                return r.status

        return await _timed_lanes(send, warm, posts, concurrency)


async def _send_httpx(posts: list[Post], connections: int) -> float:
    """Seconds to send ``posts`` from one httpx client (the delivery worker's
    client until aiohttp replaced it), ``connections`` in flight."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=30, trust_env=False) as client:

        async def send(post: Post) -> int:
            response = await client.post(post.url, content=post.body, headers=post.headers)
            return response.status_code

        return await _timed_lanes(send, posts[:256], posts, connections)


async def _timed_lanes(
    send: Callable[[Post], Awaitable[int]], warm: list[Post], posts: list[Post], lanes: int
) -> float:
    """Sends ``warm``, then times ``posts``: ``lanes`` tasks each sending the
    next post until none is left, every answer a 204."""

    async def run(todo: list[Post]) -> None:
        pending = iter(todo)

        async def lane() -> None:
            for post in pending:
                if (status := await send(post)) != 204:
                    raise RuntimeError(f"receiver answered {status}")

        await asyncio.gather(*(lane() for _ in range(lanes)))

    await run(warm)
    started = time.perf_counter()
    await run(posts)
    return time.perf_counter() - started


def http_floors(receiver: RemoteReceiver, posts: list[Post]) -> Result:
    """Where the HTTP limit is: the receiver driven by a raw asyncio client
    (64 keep-alive connections), one aiohttp session at several concurrencies,
    and one httpx client at 8 and 64, over the same POSTs."""
    posts = posts[:FLOOR_POSTS]
    warm = [Post(receiver.url("/warm"), b"{}", {"webhook-id": f"w{n}"}) for n in range(256)]
    result: Result = {"scenario": "B5 HTTP floors (same receiver, same POSTs)"}
    result["posts"] = len(posts)
    receiver.reset()
    result["receiver_raw_asyncio_client_64_conns_posts_per_s"] = round(
        len(posts) / asyncio.run(_send_raw(receiver.port, posts, 64))
    )
    for concurrency in (1, 8, 64):
        elapsed = asyncio.run(_send_all(warm, posts, concurrency))
        result[f"aiohttp_one_session_{concurrency}_conns_posts_per_s"] = round(len(posts) / elapsed)
    for connections in (8, 64):
        elapsed = asyncio.run(_send_httpx(posts, connections))
        result[f"httpx_one_client_{connections}_conns_posts_per_s"] = round(len(posts) / elapsed)
    return result


async def _send_raw(port: int, posts: list[Post], connections: int) -> float:
    """Seconds to send ``posts`` as hand-written HTTP/1.1 over keep-alive sockets."""
    pending = iter(posts)

    async def lane() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for post in pending:
                head = f"POST {urlsplit(post.url).path} HTTP/1.1\r\nhost: bench\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in post.headers.items())
                head += f"content-length: {len(post.body)}\r\n\r\n"
                writer.write(head.encode() + post.body)
                await writer.drain()
                status = await reader.readuntil(b"\r\n\r\n")
                if not status.startswith(b"HTTP/1.1 204"):
                    raise RuntimeError(f"receiver answered {status[:40]!r}")
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(connections)))
    return time.perf_counter() - started


# --- latency ------------------------------------------------------------------


@dataclass(frozen=True)
class WriterJob:
    url: str
    actors: list[Actor]  # one writer thread each
    rate: float
    seconds: float


def _write_steadily(job: WriterJob, ready: EventType, go: EventType, out: Connection) -> None:
    """In a separate process: create_entry at ``job.rate``/s for ``job.seconds``,
    spread over one thread per actor; sends [(entry id, t_commit, t_due)]."""
    actors, rate = job.actors, job.rate
    store = open_event_store(PostgresTarget.from_url(job.url), pool_size=len(actors) + 1)
    total = int(rate * job.seconds)
    done: list[tuple[str, float, float]] = []
    lock = threading.Lock()
    ready.set()
    go.wait()
    start = time.time() + 0.1

    def lane(k: int) -> None:
        ctx = CommandContext(actor=actors[k])
        for n in range(k, total, len(actors)):
            due = start + n / rate
            if (wait := due - time.time()) > 0:
                time.sleep(wait)
            result = create_entry(store, ctx, CreateEntry(title=f"latency {n}", body=BODY))
            committed = time.time()
            with lock:
                done.append((str(result.data["id"]), committed, due))

    threads = [threading.Thread(target=lane, args=(k,)) for k in range(len(actors))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    out.send(done)
    out.close()


def latency(settings: Settings, receiver: RemoteReceiver, rate: float, seconds: float) -> Result:
    settings = _scenario_settings(settings)
    with running_worker(settings) as worker:
        teams = [create_team(worker.store, f"Team {k}") for k in range(WRITERS)]
        for k, team in enumerate(teams):
            worker.register(team, receiver, f"/latency/{k}")
        worker.warm_up(teams)
        receiver.reset()
        spawn = multiprocessing.get_context("spawn")
        ready, go = spawn.Event(), spawn.Event()
        here, there = spawn.Pipe(duplex=False)
        writer = spawn.Process(
            target=_write_steadily,
            args=(WriterJob(worker.url, [t.owner for t in teams], rate, seconds), ready, go, there),
            name="bench-writers",
        )
        writer.start()
        if not ready.wait(120):
            raise RuntimeError("the writer process did not start")
        go.set()
        commits: list[tuple[str, float, float]] = here.recv()
        writer.join(30)
        complete = receiver.wait_for(len(commits), timeout=max(120.0, len(commits) / 20))
        arrivals = {webhook_id: t for (_, webhook_id), t in receiver.dump().items()}
        unique, total = receiver.count()
        with psycopg.connect(worker.url, autocommit=True) as conn:
            event_of: dict[str, str] = dict(
                conn.execute(
                    "SELECT doc->>'aggregate_id', doc->>'id' FROM reads.public_events"
                    " WHERE type = 'entry.created'"
                ).fetchall()
            )
            row_at: dict[str, float] = dict(
                conn.execute(
                    "SELECT event_id, extract(epoch FROM created_at)::float8"
                    " FROM webhook_deliveries"
                ).fetchall()
            )
        in_stream = dict(worker.tap.arrivals)
        rss = _peak_rss_of(worker.processes)
    total_s, to_stream, to_row, to_receiver = [], [], [], []
    for entry_id, committed, _ in commits:
        event_id = event_of.get(entry_id, "")
        if event_id not in arrivals:  # not received before the timeout: reported below
            continue
        received = arrivals[event_id]
        total_s.append(received - committed)
        if event_id in in_stream and event_id in row_at:
            to_stream.append(in_stream[event_id] - committed)
            to_row.append(row_at[event_id] - in_stream[event_id])
            to_receiver.append(received - row_at[event_id])
    first_due = min(c[2] for c in commits)
    achieved = len(commits) / (max(c[1] for c in commits) - first_due)
    late = [max(0.0, c[1] - c[2]) for c in commits]
    rtt = jetstream_round_trip(settings, rate, min(seconds, 5.0))
    p99 = _pct(total_s, 99)
    return {
        "scenario": f"B5 latency: {rate:g} deliveries/s offered for {seconds:g} s",
        "deliveries": len(commits),
        "received_all": "yes" if complete else f"NO: {len(total_s):,} before the timeout",
        "achieved_rate_per_s": round(achieved, 1),
        "commit_to_received_p50_ms": _pct(total_s, 50),
        "commit_to_received_p95_ms": _pct(total_s, 95),
        "commit_to_received_p99_ms": p99,
        "commit_to_received_max_ms": _pct(total_s, 100),
        "target_p99_ms": f"<= {TARGET_P99_MS:g} at {TARGET_RATE} deliveries/s",
        "meets_target": (
            ("yes" if p99 <= TARGET_P99_MS else "NO")
            + ("" if rate >= TARGET_RATE else f" (at {rate:g}/s, below the target's rate)")
        ),
        "stage_commit_to_stream_p50_p99_ms": f"{_pct(to_stream, 50)} / {_pct(to_stream, 99)}",
        "stage_stream_to_row_p50_p99_ms": f"{_pct(to_row, 50)} / {_pct(to_row, 99)}",
        "stage_row_to_received_p50_p99_ms": f"{_pct(to_receiver, 50)} / {_pct(to_receiver, 99)}",
        "baseline_jetstream_rtt_p50_ms": _pct(rtt, 50),
        "baseline_jetstream_rtt_p99_ms": _pct(rtt, 99),
        "writer_behind_schedule_p99_ms": _pct(late, 99),
        "repeated_posts": total - unique,
        "worker_peak_rss_mb": rss,  # per process
    }


def jetstream_round_trip(settings: Settings, rate: float, seconds: float) -> list[float]:
    """Seconds from a JetStream publish (acknowledged, file storage as the
    events stream) to a push subscriber's callback, at ``rate``/s."""
    return asyncio.run(_round_trips(settings, rate, int(rate * seconds)))


async def _round_trips(settings: Settings, rate: float, count: int) -> list[float]:
    client = await nats.connect(settings.nats_url or "", name="bench-rtt")
    js = client.jetstream()
    stream = stream_name(settings, "rtt")
    subject = f"{subject_prefix(settings)}.rtt"
    await js.add_stream(StreamConfig(name=stream, subjects=[subject], storage=StorageType.FILE))
    sent: dict[int, float] = {}
    took: list[float] = []
    all_in = asyncio.Event()

    async def arrived(msg: Msg) -> None:
        took.append(time.perf_counter() - sent[int(msg.data)])
        if len(took) == count:
            all_in.set()

    try:
        await js.subscribe(subject, cb=arrived)
        start = time.perf_counter()
        for n in range(count):
            if (wait := start + n / rate - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            sent[n] = time.perf_counter()
            await js.publish(subject, str(n).encode(), stream=stream)
        await asyncio.wait_for(all_in.wait(), 30)
    finally:
        await js.delete_stream(stream)
        await client.close()
    return took


# --- the run --------------------------------------------------------------------


LIGHT_RATE: Final = 50.0


def scenarios(settings: Settings, quick: bool) -> list[Result]:
    events, rate, seconds = (1_000, 200.0, 5.0) if quick else (10_000, 500.0, 20.0)
    with running_receiver() as receiver:
        one, posts = throughput(settings, receiver, events, 1)
        five, _ = throughput(settings, receiver, events, 5)
        results = [one, five, http_floors(receiver, posts)]
        # Light load first: the pipeline's own latency, before any queueing.
        results.append(latency(settings, receiver, LIGHT_RATE, seconds))
        results.append(latency(settings, receiver, rate, seconds))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="CI-sized runs")
    args = parser.parse_args()
    configure_logging("WARNING", "console")
    run_and_report("webhooks", lambda settings: scenarios(settings, args.quick))


if __name__ == "__main__":
    main()
