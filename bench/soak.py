"""Soak (`make soak`): a steady mixed load for a long time, watching for leaks,
errors and a projection that falls behind.

Starts, as real processes against the configured (or embedded) PostgreSQL and
NATS: `chronik api` with 2 uvicorn processes (docs/operations.md, "Serving on
2 cores"), one `chronik worker` (projections, fan-out, scheduler) and a
webhook receiver (bench/receiver.py) that every team's endpoint points at.
Then drives `bench.soak_load` for ``--duration`` seconds: commands, reads,
sync pulls at ``--rate`` operations/s, and ``--streams`` SSE clients open
throughout. Each process has ``--pool-size`` connections per pool (a shared
server's 100 connections are few). Every ``--sample-every`` seconds it records the resident memory
(VmRSS) of each Chronik process and the projection lag (head position minus
the slowest projection's, from the database), and the relay's and webhooks'
backlog. After the load it waits for the fan-out to drain.

It fails (exit 1) when an answer was neither 2xx nor 409/429, when a process's
mean RSS over the last third of the run exceeds that over the first third by
more than ``--max-growth-mb``, when the projection lag exceeded ``--max-lag``
positions, or when webhooks did not all arrive. A Markdown table goes to
stdout, the whole result as JSON to ``--results`` (bench/results/).

``--split-worker`` runs a worker process per role (projections, fan-out,
scheduler), so the memory figures say which part grows.

    python -m bench.soak [--duration 600] [--rate 40] [--streams 6] [--split-worker]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import psycopg
from nats.js.errors import NotFoundError

from bench.common import configured_servers, fresh_database
from bench.receiver import RemoteReceiver, running_receiver
from bench.soak_load import LoadStats, SoakTeam, drive
from bench.sse_clients import rss_kib
from infra import webhook_fanout
from infra.db import PostgresTarget
from infra.devstack.processes import free_port, wait_until
from infra.event_store import head_position, open_event_store
from infra.fanout_status import fanout_status
from infra.messaging import stream_name
from infra.operations import WORKER_ROLES
from infra.settings import Settings
from projections import registry
from tests.projection_support import create_team

RESULTS = Path(__file__).parent / "results"
TEAMS = 4


# -- servers -------------------------------------------------------------------


@contextlib.contextmanager
def chronik_process(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
        [sys.executable, "-m", "infra.cli", *argv],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def _delete_streams(nats_url: str, namespace: str) -> None:
    """The run's JetStream streams go with it: a shared server must not keep them."""
    client = await nats.connect(nats_url, connect_timeout=5, allow_reconnect=False)
    try:
        js = client.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(namespace.upper() + "_"):
                await js.delete_stream(info.config.name)
    finally:
        await client.close()


def children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in found.read_text().split()] if found.exists() else []


def _label(pid: int) -> str:
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return "api resource tracker" if "resource_tracker" in cmdline else "api worker"


def _serving(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# -- sampling ------------------------------------------------------------------


@dataclass
class Samples:
    processes: dict[str, int]  # name -> pid
    at: list[float] = field(default_factory=list)  # seconds since the load started
    rss_mb: dict[str, list[float]] = field(default_factory=dict)
    projection_lag: list[int] = field(default_factory=list)
    relay_lag: list[int] = field(default_factory=list)
    deliveries_pending: list[int] = field(default_factory=list)

    def take(self, conn: psycopg.Connection[Any], since: float) -> None:
        self.at.append(round(time.monotonic() - since, 1))
        for name, pid in self.processes.items():
            self.rss_mb.setdefault(name, []).append(round(rss_kib(pid) / 1024, 1))
        with conn.transaction():
            head = head_position(conn)
            positions = [g.position for g in registry.generations(conn) if g.state == "active"]
            relay = conn.execute("SELECT min(position) FROM relay_positions").fetchone()
            pending = conn.execute(
                "SELECT count(*) FROM webhook_deliveries WHERE status <> 'succeeded'"
            ).fetchone()
        self.projection_lag.append(head - min(positions, default=head))
        self.relay_lag.append(head - (relay[0] if relay and relay[0] is not None else head))
        self.deliveries_pending.append(int(pending[0]) if pending else 0)


async def sample_until(
    samples: Samples, conn: psycopg.Connection[Any], every: float, stop: asyncio.Event
) -> None:
    since = time.monotonic()
    while not stop.is_set():
        await asyncio.to_thread(samples.take, conn, since)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


def memory_growth(series: list[float]) -> dict[str, float]:
    """Mean RSS of the first and the last third of the samples, and the growth."""
    third = max(1, len(series) // 3)
    first, last = statistics.fmean(series[:third]), statistics.fmean(series[-third:])
    return {
        "first_third_mb": round(first, 1),
        "last_third_mb": round(last, 1),
        "growth_mb": round(last - first, 1),
        "peak_mb": max(series),
    }


# -- the run -------------------------------------------------------------------


def _setup_teams(url: str, base_url: str, receiver: RemoteReceiver) -> list[SoakTeam]:
    """Teams (owner keys) and, for each, a webhook endpoint at the receiver."""
    store = open_event_store(PostgresTarget.from_url(url), pool_size=2)
    try:
        made = [create_team(store, f"Soak {n}") for n in range(TEAMS)]
    finally:
        store.close()
    teams = [SoakTeam(str(t.team_id), t.owner_key) for t in made]
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for team in teams:
            client.post(
                f"{team.path}/webhooks",
                json={"url": receiver.url(f"/soak/{team.team_id}"), "event_types": []},
                headers=team.auth,
            ).raise_for_status()
    return teams


async def _webhook_consumer_idle(nats_url: str, stream: str) -> bool:
    """The webhook consumer has taken and acknowledged everything published:
    the deliveries of every relayed event are made."""
    client = await nats.connect(nats_url, connect_timeout=5, allow_reconnect=False)
    try:
        try:
            info = await client.jetstream().consumer_info(stream, webhook_fanout.CONSUMER)
        except NotFoundError:  # not made yet: nothing consumed
            return False
        idle: bool = info.num_pending == 0 and info.num_ack_pending == 0
        return idle
    finally:
        await client.close()


def _webhooks_drained(
    conn: psycopg.Connection[Any], receiver: RemoteReceiver, *, nats_url: str, stream: str
) -> tuple[bool, int, int]:
    """(all delivered, deliveries made, distinct deliveries the receiver got).
    In the order the fan-out works: the relay has published up to the head,
    the webhook consumer has made the deliveries of all it was given, none is
    left to send, and the receiver has every one."""
    relayed = fanout_status(conn).relay_lag == 0
    consumed = relayed and asyncio.run(_webhook_consumer_idle(nats_url, stream))
    with conn.transaction():
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status <> 'succeeded') FROM webhook_deliveries"
        ).fetchone()
    made, unsettled = (int(row[0]), int(row[1])) if row else (0, 0)
    received, _ = receiver.count()
    return consumed and unsettled == 0 and received >= made, made, received


def soak(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    namespace = f"soak{uuid.uuid4().hex[:8]}"
    try:
        return _soak(settings, args, namespace)
    finally:
        asyncio.run(_delete_streams(settings.nats_url or "", namespace))


def _soak(settings: Settings, args: argparse.Namespace, namespace: str) -> dict[str, Any]:
    url = fresh_database(settings)
    with (
        running_receiver() as receiver,
        # One connection for the samples: a shared server's connections are few.
        psycopg.connect(url, autocommit=True) as conn,
    ):
        port = free_port()
        env = {
            "CHRONIK_DATABASE_URL": url,
            "CHRONIK_NATS_URL": settings.nats_url or "",
            "CHRONIK_NATS_NAMESPACE": namespace,
            "CHRONIK_HTTP_PORT": str(port),
            "CHRONIK_HTTP_WORKERS": "2",
            "CHRONIK_DB_POOL_SIZE": str(args.pool_size),
            "CHRONIK_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
            "CHRONIK_LOG_LEVEL": "WARNING",
        }
        base_url = f"http://127.0.0.1:{port}"
        # --split-worker: a worker process per role, to tell whose memory grows.
        roles = [["--only", role] for role in WORKER_ROLES] if args.split_worker else [[]]
        with contextlib.ExitStack() as running:
            api = running.enter_context(chronik_process(["api"], env))
            workers = {
                " ".join(["worker", *role[1:]]): running.enter_context(
                    chronik_process(["worker", *role], env)
                )
                for role in roles
            }
            wait_until(lambda: _serving(base_url), timeout=60, what="the API serving")
            wait_until(lambda: len(children(api.pid)) >= 2, timeout=30, what="2 API processes")
            teams = _setup_teams(url, base_url, receiver)
            processes = {"api supervisor": api.pid} | {n: w.pid for n, w in workers.items()}
            for pid in children(api.pid):
                label = _label(pid)
                processes[f"{label} {sum(k.startswith(label) for k in processes) + 1}"] = pid
            samples = Samples(processes)
            stats = LoadStats()
            started = time.monotonic()
            asyncio.run(
                _load_and_sample(
                    base_url, teams, conn=conn, samples=samples, stats=stats, args=args
                )
            )
            load_seconds = time.monotonic() - started
            drained = False
            ours = settings.model_copy(update={"nats_namespace": namespace})
            events = stream_name(ours, "events")

            def drained_now() -> tuple[bool, int, int]:
                nats_url = settings.nats_url or ""
                return _webhooks_drained(conn, receiver, nats_url=nats_url, stream=events)

            with contextlib.suppress(TimeoutError):
                wait_until(
                    lambda: drained_now()[0],
                    timeout=args.drain_timeout,
                    what="the webhooks delivered",
                )
                drained = True
            _, deliveries, received = drained_now()
            samples.take(conn, started)  # after the drain: the lag once the load stopped
    return verdict(
        args, samples, stats,
        load_seconds=load_seconds, drained=drained, deliveries=deliveries, received=received,
    )  # fmt: skip


async def _load_and_sample(
    base_url: str,
    teams: list[SoakTeam],
    *,
    conn: psycopg.Connection[Any],
    samples: Samples,
    stats: LoadStats,
    args: argparse.Namespace,
) -> None:
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_until(samples, conn, args.sample_every, stop))
    try:
        await drive(
            base_url, teams, rate=args.rate, seconds=args.duration, streams=args.streams,
            stats=stats,
        )  # fmt: skip
    finally:
        stop.set()
        await sampler


def verdict(
    args: argparse.Namespace,
    samples: Samples,
    stats: LoadStats,
    *,
    load_seconds: float,
    drained: bool,
    deliveries: int,
    received: int,
) -> dict[str, Any]:
    memory = {name: memory_growth(series) for name, series in samples.rss_mb.items()}
    problems: list[str] = []
    if errors := stats.errors():
        problems.append(f"error answers: {errors}")
    for name, figures in memory.items():
        if figures["growth_mb"] > args.max_growth_mb:
            problems.append(f"{name} grew {figures['growth_mb']} MB (> {args.max_growth_mb})")
    max_lag = max(samples.projection_lag)
    if max_lag > args.max_lag:
        problems.append(f"projection lag reached {max_lag} positions (> {args.max_lag})")
    if not drained:
        problems.append(f"webhooks not drained: {received} of {deliveries} received")
    if quiet := [k for k in range(args.streams) if stats.sse_events[k] == 0]:
        problems.append(f"SSE streams {quiet} received no changes")
    operations = sum(sum(c.values()) for c in stats.statuses.values())
    latencies = {
        kind: {
            "p50_ms": round(statistics.median(values), 1),
            "p99_ms": round(sorted(values)[int(0.99 * (len(values) - 1))], 1),
        }
        for kind, values in sorted(stats.latencies_ms.items())
    }
    return {
        "scenario": f"soak: {args.duration:g} s at {args.rate:g} operations/s,"
        f" {args.streams} SSE streams, {TEAMS} teams",
        "ok": not problems,
        "problems": problems,
        "load_seconds": round(load_seconds, 1),
        "operations": operations,
        "operations_per_s": round(operations / load_seconds, 1),
        "late_starts": stats.late,
        "statuses": {kind: dict(c) for kind, c in sorted(stats.statuses.items())},
        "latency": latencies,
        "memory": memory,
        "max_growth_mb_allowed": args.max_growth_mb,
        "projection_lag_max": max_lag,
        "projection_lag_p95": sorted(samples.projection_lag)[
            int(0.95 * (len(samples.projection_lag) - 1))
        ],
        "projection_lag_after_drain": samples.projection_lag[-1],
        "max_lag_allowed": args.max_lag,
        "relay_lag_max": max(samples.relay_lag),
        "webhook_deliveries": deliveries,
        "webhook_received": received,
        "webhook_pending_max": max(samples.deliveries_pending),
        "sse_changes_events": [stats.sse_events[k] for k in range(args.streams)],
        "sse_reconnects": stats.sse_reconnects,
        "samples": {
            "at_s": samples.at,
            "rss_mb": samples.rss_mb,
            "projection_lag": samples.projection_lag,
        },
    }


def report(result: dict[str, Any], results_dir: Path) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"soak-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\n### {result['scenario']}\n| metric | value |\n|---|---|")
    for key, value in result.items():
        if key not in {"scenario", "samples", "memory"}:
            print(f"| {key} | {value} |")
    print("\n| process | first third MB | last third MB | growth MB | peak MB |")
    print("|---|---|---|---|---|")
    for name, m in result["memory"].items():
        print(
            f"| {name} | {m['first_third_mb']} | {m['last_third_mb']} | {m['growth_mb']}"
            f" | {m['peak_mb']} |"
        )
    print(f"\nresult: {'ok' if result['ok'] else 'FAILED'}; {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=40.0, help="operations started per second")
    parser.add_argument("--streams", type=int, default=6, help="SSE clients held open")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--max-growth-mb", type=float, default=25.0, help="allowed RSS growth")
    parser.add_argument("--max-lag", type=int, default=2000, help="allowed projection lag")
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="seconds for webhooks")
    parser.add_argument(
        "--pool-size", type=int, default=4, help="CHRONIK_DB_POOL_SIZE of each process"
    )
    parser.add_argument("--split-worker", action="store_true", help="one worker process per role")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON")
    args = parser.parse_args(argv)
    with configured_servers() as settings:
        result = soak(settings, args)
    report(result, args.results)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
