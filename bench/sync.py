"""Sync benchmarks, against a baseline measured in the same run.

S1 page: a 500-change pull page from random cursors, at each log size, against
   a raw indexed read of 500 rows of the event log after the same positions.
S2 full sync: entities/s of a full sync in pages of 1,000.

    python -m bench.sync [--quick]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

import psycopg

from bench.common import run_and_report, seeded_log, timed_rebuild
from infra.settings import Settings
from projections.pagination import encode_cursor
from projections.sync import CURSOR_KIND, pull

RAW_PAGE = (
    "SELECT * FROM chronik_events WHERE notification_id > %s ORDER BY notification_id LIMIT 500"
)


def _ms(values: list[float], q: int) -> float:
    return round(statistics.quantiles(values, n=100)[q - 1] * 1000, 2)


def measure(settings: Settings, events: int, samples: int) -> dict[str, Any]:
    log = seeded_log(settings, events)
    team, url = log.team, log.settings.database_url_value()
    build_s = timed_rebuild(log, "sync")
    rng = random.Random(7)  # noqa: S311 - where to sample, not a secret
    page: list[float] = []
    raw: list[float] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(samples):
            after = rng.randrange(0, max(events - 500, 1))
            cursor = encode_cursor(CURSOR_KIND, after, 0, 0)
            t0 = time.perf_counter()
            got = pull(conn, team.team_id, team.owner.user_id, cursor, 500)
            page.append(time.perf_counter() - t0)
            assert len(got.changes) == 500
            t0 = time.perf_counter()
            conn.execute(RAW_PAGE, (after,)).fetchall()
            raw.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        entities = 0
        cursor_: str | None = None
        while True:
            full = pull(conn, team.team_id, team.owner.user_id, cursor_, 1000)
            entities += len(full.changes)
            cursor_ = full.cursor
            if not full.has_more:
                break
        full_s = time.perf_counter() - t0
    return {
        "scenario": f"S1/S2 sync at {events:,} events",
        "sync_build_events_per_s": round(events / build_s),
        "page500_p50_ms": _ms(page, 50),
        "page500_p99_ms": _ms(page, 99),
        "baseline_raw_log_page_p50_ms": _ms(raw, 50),
        "baseline_raw_log_page_p99_ms": _ms(raw, 99),
        "ratio_p50": round(statistics.median(page) / statistics.median(raw), 2),
        "full_sync_entities": entities,
        "full_sync_entities_per_s": round(entities / full_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="CI-sized runs")
    args = parser.parse_args()
    sizes = [20_000, 100_000] if args.quick else [100_000, 1_000_000]
    run_and_report("sync", lambda settings: [measure(settings, n, 200) for n in sizes])


if __name__ == "__main__":
    main()
