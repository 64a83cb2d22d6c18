"""B6 audit benchmarks, each against a baseline measured in the same run.

A1 chain: the audit ledger built from position 0 over an N-event log
   (hash every stored event, link, COPY the links), events/s.
A2 verify: `chronik audit verify` over the same log (read every event and its
   link side by side, recompute both hashes), events/s.
A3 export: `chronik export` of the same log as NDJSON (read, decode, make the
   public document, write), events/s.
Baseline: a raw server-side-cursor scan of the same stored events through
psycopg, nothing done with them (the read limit on this machine).

    python -m bench.audit [--quick]
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from bench.common import run_and_report, seeded_log, timed_rebuild
from infra.audit_commands import verify_log
from infra.export import export
from infra.settings import Settings, load_settings

KEYS = "bench:" + "b" * 48


def _scan_rate(url: str) -> float:
    """Stored events/s read through a server-side cursor, the verifier's query shape."""
    with psycopg.connect(url) as conn, conn.cursor(name="scan") as cur:
        cur.itersize = 5000
        started = time.perf_counter()
        cur.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM chronik_events ORDER BY notification_id"
        )
        rows = sum(1 for _ in cur)
        return rows / (time.perf_counter() - started)


@contextmanager
def _discarding() -> Iterator[io.BytesIO]:
    sink = io.BytesIO()
    yield sink
    sink.close()


def audit_rates(settings: Settings, events: int) -> dict[str, Any]:
    keys = load_settings(audit_signing_keys=KEYS).audit_signing_keys
    log = seeded_log(settings.model_copy(update={"audit_signing_keys": keys}), events)
    url = log.settings.database_url_value()
    total = events + 3  # the team's own creation events
    chain_s = timed_rebuild(log, "audit_ledger")
    started = time.perf_counter()
    report, _ = verify_log(log.settings, 0, None, show_progress=False)
    verify_s = time.perf_counter() - started
    assert report.ok, report
    exported = export(log.settings, _discarding, after=0, team=None)
    scan = _scan_rate(url)
    return {
        "scenario": "B6 audit",
        "events": report.checked,
        "chain_events_per_s": round(total / chain_s),
        "verify_events_per_s": round(report.checked / verify_s),
        "export_events_per_s": round(exported.rate),
        "baseline_scan_events_per_s": round(scan),
        "verify_ratio_to_scan": round(report.checked / verify_s / scan, 3),
        "export_ratio_to_scan": round(exported.rate / scan, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="CI-sized runs")
    args = parser.parse_args()
    events = 20_000 if args.quick else 100_000
    run_and_report("audit", lambda settings: [audit_rates(settings, events)])


if __name__ == "__main__":
    main()
