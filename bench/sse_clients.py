"""Sync stream fan-out: N concurrent SSE clients, one write, how fast each sees it.

Starts nothing: point it at a running API (`make run` / `chronik dev`) and the
demo team. Streams are capped per API key, so it first issues enough keys
(``--per-key`` streams each), by default one per new member so that each key
reads its own scope, and uses each key once so that the server's one-time
scrypt check is not counted in the memory figures. Then it opens the streams
(raw asyncio sockets: a few KiB per client here), writes one entry per round
with a client-generated id, and times each client's receipt of that id from
the moment the POST's response arrived.

    python -m bench.sse_clients --base-url http://127.0.0.1:8000 --key chk_... \\
        --team <team id> --clients 1000 --api-pid <pid of chronik dev>
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import resource
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

RESULTS = Path(__file__).parent / "results"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        soft = hard if hard == resource.RLIM_INFINITY else min(hard, max(wanted, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(0, math.ceil(pct / 100 * len(ordered)) - 1)
    return ordered[rank]


# -- keys ----------------------------------------------------------------------------


async def issue_keys(
    owner: httpx.AsyncClient, team: str, count: int, *, members: bool
) -> list[str]:
    me = (await owner.get("/v1/me")).raise_for_status().json()
    # One at a time: concurrent writes to one team while keys are checked have
    # given 500s from the event store's aggregate cache (see the report).
    gate = asyncio.Semaphore(1)

    async def one(n: int) -> str:
        async with gate:
            user_id = me["user_id"]
            if members:
                member = {
                    "email": f"bench-{uuid.uuid4().hex[:12]}@example.com",
                    "display_name": f"Bench {n}",
                    "role": "member",
                }
                added = (
                    await owner.post(f"/v1/teams/{team}/members", json=member)
                ).raise_for_status()
                user_id = added.json()["data"]["user_id"]
            body = {"user_id": user_id, "name": f"bench {n}"}
            issued = (await owner.post(f"/v1/teams/{team}/api-keys", json=body)).raise_for_status()
            key: str = issued.json()["data"]["key"]
            # First use pays the server's scrypt check (and its memory) now.
            headers = {"Authorization": f"Bearer {key}"}
            (await owner.get("/v1/me", headers=headers)).raise_for_status()
            return key

    return list(await asyncio.gather(*(one(n) for n in range(count))))


# -- clients -------------------------------------------------------------------------


@dataclass
class Round:
    marker: bytes
    received: dict[int, float] = field(default_factory=dict)
    everyone: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Fleet:
    size: int
    host: str
    port: int
    path: str
    gate: asyncio.Semaphore  # bounds connections being opened at once
    connected: int = 0
    dropped: int = 0  # streams that ended after they were open
    failed: list[str] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    round: Round | None = None

    def settled(self) -> None:
        if self.connected + len(self.failed) == self.size:
            self.ready.set()


async def client(n: int, fleet: Fleet, key: str) -> None:
    writer: asyncio.StreamWriter | None = None
    connected = False
    try:
        host, port = fleet.host, fleet.port
        async with fleet.gate:
            reader, writer = await asyncio.open_connection(host, port)
            request = (
                f"GET {fleet.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
            )
            writer.write(request.encode())
            status = await reader.readline()
            if b" 200 " not in status:
                raise RuntimeError(status.decode().strip())
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
        connected = True
        fleet.connected += 1
        fleet.settled()
        # Chunked transfer: each SSE event is one chunk, so an id is never split.
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                fleet.dropped += 1
                return
            data = await reader.readexactly(size + 2)
            current = fleet.round
            if current is not None and n not in current.received and current.marker in data:
                current.received[n] = time.perf_counter()
                if len(current.received) == fleet.connected:
                    current.everyone.set()
    except (OSError, RuntimeError, ValueError, asyncio.IncompleteReadError) as exc:
        if connected:
            fleet.dropped += 1
        else:
            fleet.failed.append(f"{type(exc).__name__}: {exc}")
            fleet.settled()
    finally:
        if writer is not None:
            writer.close()


# -- the run -------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    parts = urlsplit(args.base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = f"/v1/teams/{args.team}/sync/stream"
    fd_limit = raise_fd_limit(args.clients + 256)
    owner = httpx.AsyncClient(
        base_url=args.base_url, headers={"Authorization": f"Bearer {args.key}"}, timeout=60
    )
    async with owner:
        keys_needed = math.ceil(args.clients / args.per_key)
        started = time.perf_counter()
        keys = await issue_keys(owner, args.team, keys_needed, members=not args.same_user)
        print(f"issued {len(keys)} keys in {time.perf_counter() - started:.1f} s", flush=True)
        await asyncio.sleep(args.settle)
        rss_before = rss_kib(args.api_pid) if args.api_pid else None
        fds_before = open_fds(args.api_pid) if args.api_pid else None

        gate = asyncio.Semaphore(args.connect_concurrency)
        fleet = Fleet(args.clients, host, port, path, gate)
        started = time.perf_counter()
        tasks = [
            asyncio.create_task(client(n, fleet, keys[n // args.per_key]))
            for n in range(args.clients)
        ]
        await asyncio.wait_for(fleet.ready.wait(), args.timeout)
        connect_seconds = time.perf_counter() - started
        print(
            f"{fleet.connected} streams open, {len(fleet.failed)} failed, "
            f"in {connect_seconds:.1f} s",
            flush=True,
        )
        # Let every stream reach its wait after its first page.
        await asyncio.sleep(args.settle)
        rss_after = rss_kib(args.api_pid) if args.api_pid else None
        fds_after = open_fds(args.api_pid) if args.api_pid else None

        from_response: list[float] = []
        from_request: list[float] = []
        missed = 0
        for number in range(args.rounds):
            entry_id = str(uuid.uuid4())
            fleet.round = current = Round(entry_id.encode())
            sent = time.perf_counter()
            created = await owner.post(
                f"/v1/teams/{args.team}/entries",
                json={"id": entry_id, "title": f"fan-out {number}", "visibility": "team"},
            )
            answered = time.perf_counter()
            created.raise_for_status()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(current.everyone.wait(), args.timeout)
            missed += fleet.connected - len(current.received)
            from_response += [(t - answered) * 1000 for t in current.received.values()]
            from_request += [(t - sent) * 1000 for t in current.received.values()]
            print(
                f"round {number + 1}: {len(current.received)}/{fleet.connected} received, "
                f"p50 {percentile(from_response, 50):.1f} ms",
                flush=True,
            )
            await asyncio.sleep(args.settle)
        rss_end = rss_kib(args.api_pid) if args.api_pid else None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def summary(values: list[float]) -> dict[str, float]:
        if not values:
            return {}
        return {
            "p50_ms": round(percentile(values, 50), 1),
            "p90_ms": round(percentile(values, 90), 1),
            "p99_ms": round(percentile(values, 99), 1),
            "max_ms": round(max(values), 1),
            "mean_ms": round(statistics.fmean(values), 1),
        }

    growth = rss_after - rss_before if rss_before is not None and rss_after is not None else None
    return {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "clients": args.clients,
        "streams_per_key": args.per_key,
        "distinct_members": not args.same_user,
        "rounds": args.rounds,
        "connected": fleet.connected,
        "failed": len(fleet.failed),
        "failures": sorted(set(fleet.failed))[:5],
        "dropped": fleet.dropped,
        "connect_seconds": round(connect_seconds, 2),
        "client_fd_limit": fd_limit,
        "api_rss_kib": {"before": rss_before, "after_connect": rss_after, "end": rss_end},
        "api_rss_growth_kib": growth,
        "api_rss_growth_per_stream_kib": round(growth / fleet.connected, 1)
        if growth is not None and fleet.connected
        else None,
        "api_open_fds": {"before": fds_before, "after_connect": fds_after},
        "missed": missed,
        "fan_out_from_post_response": summary(from_response),
        "fan_out_from_post_request": summary(from_request),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--key", required=True, help="an owner or admin key of the team")
    parser.add_argument("--team", required=True, help="the team id")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--api-pid", type=int, help="the API process, for VmRSS and open fds")
    parser.add_argument("--per-key", type=int, default=5, help="streams per key (server cap: 5)")
    parser.add_argument("--same-user", action="store_true", help="every key for the owner")
    parser.add_argument("--rounds", type=int, default=1, help="entries written, one at a time")
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds of quiet between phases")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if result["failed"] == 0 and result["missed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
