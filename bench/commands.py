"""B1 commands: create-entry over HTTP at 32 concurrent connections, against
two baselines served the same way in the same run.

- (a) `bench/baselines/crud_app.py`: plain FastAPI + psycopg, one row per request;
- (b) `bench/baselines/eventsourcing_app.py`: the same JournalEntry aggregate saved
  by a plain eventsourcing Application, one transaction per command;
- Chronik's `chronik api` (auth, quota, idempotency, metadata) with group commit,
  and without it (`CHRONIK_GROUP_COMMIT_MAX=1`) to show what group commit buys;
  every connection writes to a team of its own (many tenants), and once with all
  32 on one team (every create also counts against that team's monthly quota, one
  aggregate: they serialise on it).

Load comes from `bench.load` in a process of its own, closed-loop, the same
generator for every row. Each server runs `--workers` processes. The rows are
measured in interleaved rounds (a slow spell of the machine hits all alike),
and each row is its median round.

    python -m bench.commands [--quick] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from bench.baselines import crud_app, eventsourcing_app
from bench.common import fresh_database, run_and_report
from bench.load import LoadJob, LoadResult, Target, run_load
from infra.db import PostgresTarget
from infra.devstack.processes import free_port, wait_until
from infra.event_store import open_event_store
from infra.settings import Settings
from tests.projection_support import create_team

CONNECTIONS = 32
BODY = {"body": "A day's notes, long enough to be a real entry. " * 8, "tags": ["bench"]}


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process and its children, in MB."""
    total = 0
    children = Path(f"/proc/{pid}/task/{pid}/children")
    pids = [pid, *map(int, children.read_text().split())] if children.exists() else [pid]
    for each in pids:
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return round(total / 1024, 1)


@contextmanager
def _serving(argv: Sequence[str], env: dict[str, str], port: int) -> Iterator[int]:
    process = subprocess.Popen(  # noqa: S603 - our own interpreter
        [sys.executable, "-m", *argv], env={**os.environ, **env}, stdout=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: _up(port), timeout=60, what=f"{argv[0]} serving")
        yield process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def _uvicorn(app: str, port: int, workers: int) -> list[str]:
    return [
        "uvicorn", "--factory", app, "--port", str(port), "--workers", str(workers),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


def _row(name: str, result: LoadResult, rss_mb: float) -> dict[str, Any]:
    created = result.statuses.get("201", 0)
    return {
        "server": name,
        "requests_per_s": round(result.per_second),
        "created": created,
        "other_statuses": {k: v for k, v in result.statuses.items() if k != "201"},
        "p50_ms": round(result.percentile(50), 1),
        "p99_ms": round(result.percentile(99), 1),
        "peak_rss_mb": rss_mb,
    }


@dataclass(frozen=True)
class Server:
    """One row of the table: how to start it, and where its load goes."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    targets: list[Target]


def _measure(server: Server, seconds: float) -> dict[str, Any]:
    with _serving(server.argv, server.env, server.port) as pid:
        job = LoadJob(port=server.port, targets=server.targets, seconds=seconds, body=BODY)
        result = run_load(job)
        rss = peak_rss_mb(pid)
    return _row(server.name, result, rss)


def _baseline(
    name: str, app: ModuleType, variable: str, settings: Settings, workers: int
) -> Server:
    url = fresh_database(settings)
    app.prepare(url)
    port = free_port()
    argv = _uvicorn(f"{app.__name__}:create_app", port, workers)
    return Server(name, argv, {variable: url}, port, [Target("/entries", {})] * CONNECTIONS)


def _chronik(
    name: str, settings: Settings, *, workers: int, teams: int, group_commit_max: int
) -> Server:
    url = fresh_database(settings)
    store = open_event_store(PostgresTarget.from_url(url), pool_size=2)
    fixtures = [create_team(store, f"Bench {n}") for n in range(teams)]
    store.close()
    port = free_port()
    env = {
        "CHRONIK_DATABASE_URL": url,
        "CHRONIK_NATS_URL": settings.nats_url or "",
        "CHRONIK_HTTP_PORT": str(port),
        "CHRONIK_HTTP_WORKERS": str(workers),
        "CHRONIK_GROUP_COMMIT_MAX": str(group_commit_max),
        "CHRONIK_LOG_LEVEL": "WARNING",
    }
    targets = [
        Target(
            path=f"/v1/teams/{fixtures[n % teams].team_id}/entries",
            headers={"authorization": f"Bearer {fixtures[n % teams].owner_key}"},
        )
        for n in range(CONNECTIONS)
    ]
    return Server(name, ["infra.cli", "api"], env, port, targets)


def commands(settings: Settings, seconds: float, workers: int, rounds: int) -> list[dict[str, Any]]:
    servers = [
        _baseline("(a) CRUD baseline", crud_app, "CRUD_DATABASE_URL", settings, workers),
        _baseline(
            "(b) plain eventsourcing", eventsourcing_app, "PLAIN_DATABASE_URL", settings, workers
        ),
    ]
    for name, teams, group_commit_max in (
        ("chronik, 32 teams", CONNECTIONS, 64),
        ("chronik, 32 teams, no group commit", CONNECTIONS, 1),
        ("chronik, 1 team", 1, 64),
    ):
        servers.append(
            _chronik(
                name, settings, workers=workers, teams=teams, group_commit_max=group_commit_max
            )
        )
    runs: dict[str, list[dict[str, Any]]] = {server.name: [] for server in servers}
    for _ in range(rounds):
        for server in servers:
            runs[server.name].append(_measure(server, seconds))
    rows = [sorted(r, key=lambda row: row["requests_per_s"])[len(r) // 2] for r in runs.values()]
    crud, plain, chronik = (row["requests_per_s"] for row in rows[:3])
    return [
        {
            "scenario": f"B1 commands ({CONNECTIONS} connections, {seconds:.0f} s,"
            f" {workers} server process(es) each, median of {rounds} round(s))",
            **{row["server"]: _summary(row) for row in rows},
            "chronik / CRUD": round(chronik / crud, 2),
            "chronik / plain eventsourcing": round(chronik / plain, 2),
            "requests/s in each round": {
                name: [row["requests_per_s"] for row in measured] for name, measured in runs.items()
            },
        }
    ]


def _summary(row: dict[str, Any]) -> str:
    others = f", other: {row['other_statuses']}" if row["other_statuses"] else ""
    return (
        f"{row['requests_per_s']}/s, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
        f"{row['peak_rss_mb']} MB{others}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="CI-sized runs")
    parser.add_argument("--workers", type=int, default=2, help="server processes for each app")
    args = parser.parse_args()
    seconds, rounds = (5.0, 1) if args.quick else (20.0, 3)
    run_and_report("commands", lambda settings: commands(settings, seconds, args.workers, rounds))


if __name__ == "__main__":
    main()
