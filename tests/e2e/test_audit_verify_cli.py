"""`chronik audit verify` over a 100,000-event log: ok when untouched, and the
exact position of one changed byte, one deleted row and one inserted row."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from infra import operations
from infra.db import PostgresTarget
from infra.event_store import open_event_store
from infra.settings import Settings, load_settings
from tests.projection_support import connect, create_team, seed_entries

CHRONIK = str(Path(sys.executable).parent / "chronik")
EVENTS = 100_000
KEYS = "2026-11:" + "k" * 40


@pytest.fixture
def signed(settings: Settings) -> Settings:
    keys = load_settings(audit_signing_keys=KEYS).audit_signing_keys
    return settings.model_copy(update={"audit_signing_keys": keys})


def _chronik(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "CHRONIK_DATABASE_URL": settings.database_url_value(),
        "CHRONIK_AUDIT_SIGNING_KEYS": KEYS,
    }
    return subprocess.run(
        [CHRONIK, "audit", *args], env=env, capture_output=True, text=True, timeout=300
    )


def _positions(url: str, *nth: int) -> list[int]:
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT notification_id FROM (SELECT notification_id, "
            "row_number() OVER (ORDER BY notification_id) AS n FROM chronik_events) r "
            "WHERE n = ANY(%s) ORDER BY n",
            (list(nth),),
        ).fetchall()
    return [row[0] for row in rows]


def test_a_large_log_verifies_and_each_kind_of_tampering_is_found_where_it_is(
    signed: Settings,
) -> None:
    url = signed.database_url_value()
    store = open_event_store(PostgresTarget.from_url(url), pool_size=2)
    team = create_team(store)
    seed_entries(store, team.owner, EVENTS // 2)
    with connect(url) as conn:
        # Ids burned as rolled-back inserts burn them: a gap the ledger skips.
        conn.execute(
            "SELECT nextval('chronik_events_notification_id_seq') FROM generate_series(1, 3)"
        )
    seed_entries(store, team.owner, EVENTS // 2)
    store.close()
    operations.rebuild(signed, "audit_ledger")
    with connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM chronik_events").fetchone()
    assert row is not None
    total = row[0]
    assert total > EVENTS

    untouched = _chronik(signed, "verify")
    assert untouched.returncode == 0, untouched.stderr
    assert untouched.stdout.splitlines()[0] == "ok"
    assert f"checked {total} events" in untouched.stdout
    assert "signatures checked" in untouched.stdout

    head = orjson.loads(_chronik(signed, "head").stdout)
    assert head["count"] == total
    assert head["checkpoint"]["key_id"] == "2026-11"

    deleted, changed = _positions(url, 60_001, 90_001)
    with connect(url) as conn:
        conn.execute(
            "UPDATE chronik_events SET state = overlay(state placing 'X'::bytea from 40 for 1) "
            "WHERE notification_id = %s",
            (changed,),
        )
    report = _chronik(signed, "verify")
    assert report.returncode == 1
    assert report.stdout.splitlines()[0].startswith(f"FAILED at position {changed}: ")
    assert "changed after it was chained" in report.stdout

    with connect(url) as conn:
        conn.execute("DELETE FROM chronik_events WHERE notification_id = %s", (deleted,))
    report = _chronik(signed, "verify")
    assert report.stdout.splitlines()[0].startswith(f"FAILED at position {deleted}: ")
    assert "no longer in the log" in report.stdout

    with connect(url) as conn:
        row = conn.execute(
            "SELECT min(notification_id) + 1 FROM chronik_events e WHERE NOT EXISTS "
            "(SELECT 1 FROM chronik_events n WHERE n.notification_id = e.notification_id + 1)"
        ).fetchone()
        assert row is not None
        gap = row[0]
        conn.execute(
            "INSERT INTO chronik_events (originator_id, originator_version, topic, state, "
            "notification_id) SELECT originator_id, originator_version + 1000, topic, state, %s "
            "FROM chronik_events WHERE notification_id = %s",
            (gap, gap - 1),
        )
    report = _chronik(signed, "verify")
    assert report.stdout.splitlines()[0].startswith(f"FAILED at position {gap}: ")
    assert "never chained" in report.stdout
    # A range that ends before the first change is still fine.
    assert _chronik(signed, "verify", "--to", str(gap - 1)).returncode == 0
