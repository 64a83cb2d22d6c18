"""Projection benchmarks, each against a baseline measured in the same run.

P1 rebuild: each projection rebuilt from position 0 over one N-event log
   (1,000,000 in full mode), against a raw COPY of the same number of rows
   into a plain table shaped like the entries table (the physical limit of
   this machine; the mean of one run before and one after the entries
   rebuild). Targets (issue 9): entries >= 30,000 events/s and >= 25 % of COPY.
P2 command-to-visible: a create over HTTP, then a read with min_position of the
   returned position, against the same read of an entry already visible.

    python -m bench.projections [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import psycopg

from bench.common import fresh_database, run_and_report, seeded_log, timed_rebuild
from infra.db import PostgresTarget
from infra.devstack.processes import free_port, wait_until
from infra.event_store import open_event_store
from infra.settings import Settings
from projections.catalog import all_projections
from tests.projection_support import create_team, wait_caught_up


def _copy_baseline(url: str, rows: int) -> float:
    """Rows/s of COPY into a plain table shaped like the entries read table
    (dropped afterwards, so that it can be measured again)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE copy_baseline (id uuid PRIMARY KEY, team_id uuid, author_id uuid, "
            "title text, body text, tags text[], visibility text, prompt_id uuid, version bigint, "
            "created_at timestamptz, updated_at timestamptz, deleted_at timestamptz, "
            "created_position bigint, position bigint)"
        )
        team = uuid.uuid4()
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            copy_sql = "COPY copy_baseline FROM STDIN"
            with cur.copy(copy_sql) as copy:
                for n in range(rows):
                    copy.write_row((
                        uuid.uuid4(), team, team, f"seeded {n}", "x" * 200, ["s"], "team", None,
                        1, None, None, None, n, n,
                    ))  # fmt: skip
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE copy_baseline")
    return rows / elapsed


def rebuild_rates(settings: Settings, events: int) -> list[dict[str, Any]]:
    """Each rebuild's rate against the mean of two COPY baselines, measured
    just before and just after the first (entries, the one with targets): this
    machine's COPY rate moves by a third within minutes."""
    log = seeded_log(settings, events)
    url = log.settings.database_url_value()
    # entries first (stable: the others keep the catalog's order)
    projections = sorted(all_projections(), key=lambda projection: projection.name != "entries")
    copies = [_copy_baseline(url, events)]
    elapsed = {projections[0].name: timed_rebuild(log, projections[0].name)}
    copies.append(_copy_baseline(url, events))
    for projection in projections[1:]:
        elapsed[projection.name] = timed_rebuild(log, projection.name)
    copy_rate = statistics.fmean(copies)
    return [
        {
            "scenario": f"P1 rebuild {name}",
            "events": events,
            "events_per_s": round(events / seconds),
            "baseline_copy_rows_per_s": round(copy_rate),
            "baseline_copy_before_after_first": [round(rate) for rate in copies],
            "ratio_to_copy": round(events / seconds / copy_rate, 3),
        }
        for name, seconds in elapsed.items()
    ]


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def visible_latency(settings: Settings, commands: int) -> dict[str, Any]:
    url = fresh_database(settings)
    port = free_port()
    env = {
        **os.environ,
        "CHRONIK_DATABASE_URL": url,
        "CHRONIK_HTTP_PORT": str(port),
        "CHRONIK_LOG_LEVEL": "WARNING",
    }
    if settings.nats_url:
        env["CHRONIK_NATS_URL"] = settings.nats_url
    api = subprocess.Popen([sys.executable, "-m", "infra.cli", "api"], env=env)
    worker = subprocess.Popen([sys.executable, "-m", "infra.cli", "worker"], env=env)
    try:
        store = open_event_store(PostgresTarget.from_url(url), pool_size=2)
        team = create_team(store)
        store.close()
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _up(base), timeout=30, what="the API")
        wait_caught_up(url, "entries")
        headers = {"Authorization": f"Bearer {team.owner_key}"}
        entries = f"/v1/teams/{team.team_id}/entries"
        visible: list[float] = []
        plain: list[float] = []
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            for n in range(commands):
                created = client.post(entries, json={"title": f"latency {n}"})
                position = created.json()["position"]
                one = f"{entries}/{created.json()['data']['id']}"
                started = time.perf_counter()
                read = client.get(one, params={"min_position": position})
                visible.append(time.perf_counter() - started)
                assert read.status_code == 200, read.text
                started = time.perf_counter()
                client.get(one)
                plain.append(time.perf_counter() - started)
    finally:
        for process in (api, worker):
            process.terminate()
            process.wait(timeout=30)
    ms = 1000.0
    return {
        "scenario": "P2 command-to-visible",
        "commands": commands,
        "visible_p50_ms": round(_percentile(visible, 50) * ms, 2),
        "visible_p99_ms": round(_percentile(visible, 99) * ms, 2),
        "baseline_read_p50_ms": round(_percentile(plain, 50) * ms, 2),
        "baseline_read_p99_ms": round(_percentile(plain, 99) * ms, 2),
        "ratio_p50": round(_percentile(visible, 50) / _percentile(plain, 50), 2),
    }


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="CI-sized runs")
    args = parser.parse_args()
    events, commands = (20_000, 200) if args.quick else (1_000_000, 1000)
    run_and_report(
        "projections",
        lambda settings: [*rebuild_rates(settings, events), visible_latency(settings, commands)],
    )


if __name__ == "__main__":
    main()
