"""Daily digests (infra.digests) against real PostgreSQL: exactly one digest
per member and day however many jobs tick at once, only the notifications
stored for the digest (the preference when each was stored, not now),
nothing when nothing is new, and each notification in exactly one digest.

Members and preferences are rows of reads.team_members and
reads.notification_preferences; where the projections have not created
those views in the test's database, the test creates tables of that shape.
Notifications are inserted directly, as the consumer writes them.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from psycopg.rows import dict_row

from infra.db import PostgresTarget
from infra.digests import DigestJob
from infra.notifications import DELIVERY_KEY
from infra.settings import Settings

TEAM = uuid.UUID("d1000000-0000-4000-8000-000000000001")
DAY = date(2030, 1, 10)
AFTER_DIGEST_TIME = datetime(2030, 1, 10, 8, 1, tzinfo=UTC)  # digest_hour 8


@pytest.fixture
def digest_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"digest_hour": 8})


@pytest.fixture
def db(digest_settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    conninfo = PostgresTarget.from_url(digest_settings.database_url_value()).conninfo()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if _missing(conn, "reads.team_members"):
            conn.execute(
                "CREATE TABLE reads.team_members (team_id uuid, user_id uuid, email text,"
                " display_name text, role text, PRIMARY KEY (team_id, user_id))"
            )
        if _missing(conn, "reads.notification_preferences"):
            conn.execute(
                "CREATE TABLE reads.notification_preferences (team_id uuid, user_id uuid,"
                " kind text, inbox boolean, email boolean, digest boolean,"
                " PRIMARY KEY (team_id, user_id, kind))"
            )
        yield conn


def _missing(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
    return row is None or row[0] is None


def job(settings: Settings, *, settle: float = 0.0) -> DigestJob:
    conninfo = PostgresTarget.from_url(settings.database_url_value()).conninfo()
    return DigestJob(settings, lambda: psycopg.connect(conninfo, autocommit=True), settle=settle)


def member(conn: psycopg.Connection[Any], name: str, digest_kinds: list[str]) -> uuid.UUID:
    user = uuid.uuid4()
    conn.execute(
        "INSERT INTO reads.team_members (team_id, user_id, email, display_name, role)"
        " VALUES (%s, %s, %s, %s, 'member')",
        (TEAM, user, f"{name}@example.test", name.title()),
    )
    for kind in digest_kinds:
        conn.execute(
            "INSERT INTO reads.notification_preferences (team_id, user_id, kind, inbox,"
            " email, digest) VALUES (%s, %s, %s, true, false, true)",
            (TEAM, user, kind),
        )
    return user


_positions = iter(range(1, 1_000_000))


def notify(
    conn: psycopg.Connection[Any],
    user: uuid.UUID,
    kind: str,
    title: str,
    *,
    age: float = 0.0,
    email: str = "digest",
) -> None:
    """A notification as the consumer stores it: ``email`` is what the
    member's preference for the kind said then (off, immediate or digest)."""
    position = next(_positions)
    data = orjson.dumps({DELIVERY_KEY: {"inbox": True, "email": email}}).decode()
    conn.execute(
        "INSERT INTO notifications (team_id, user_id, kind, position, event_id, title, body,"
        " data, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb,"
        " now() - make_interval(secs => %s))",
        (TEAM, user, kind, position, f"evt-{position}", title, f"About {title}.", data, age),
    )


def digests(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM email_outbox WHERE digest_day IS NOT NULL ORDER BY digest_day, id"
        ).fetchall()


def test_one_digest_per_member_and_day_across_concurrent_jobs(
    digest_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    ada = member(db, "ada", ["entry.shared"])
    bob = member(db, "bob", ["entry.shared"])  # nothing new
    cyd = member(db, "cyd", [])  # no digest
    notify(db, ada, "entry.shared", "Ada's first")
    notify(db, ada, "entry.shared", "Ada's second")
    notify(db, ada, "webhook.disabled", "A webhook", email="off")  # digest off for this kind
    notify(db, cyd, "entry.shared", "Cyd's", email="immediate")
    jobs = [job(digest_settings) for _ in range(4)]
    barrier = threading.Barrier(len(jobs))

    def run(each: DigestJob) -> None:
        barrier.wait(timeout=10)
        for _ in range(5):
            each.tick(AFTER_DIGEST_TIME)
            with db_of(digest_settings) as conn:
                each.write_digests(conn, DAY)

    with ThreadPoolExecutor(len(jobs)) as pool:
        for done in [pool.submit(run, each) for each in jobs]:
            done.result(timeout=60)  # raises what the job raised
    (digest,) = digests(db)
    assert (digest["user_id"], digest["digest_day"], digest["status"]) == (ada, DAY, "pending")
    assert digest["to_address"] == "ada@example.test"
    assert digest["notification_id"] is None
    assert "2 new" in digest["subject"]
    assert "Ada's first" in digest["body"]
    assert "Ada's second" in digest["body"]
    assert "A webhook" not in digest["body"]
    assert bob != digest["user_id"] != cyd


def db_of(settings: Settings) -> psycopg.Connection[Any]:
    conninfo = PostgresTarget.from_url(settings.database_url_value()).conninfo()
    return psycopg.connect(conninfo, autocommit=True)


def test_nothing_before_the_digest_time(
    digest_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    ada = member(db, "ada", ["entry.shared"])
    notify(db, ada, "entry.shared", "Early")
    each = job(digest_settings)
    each.tick(datetime(2030, 1, 10, 7, 59, tzinfo=UTC))
    assert digests(db) == []
    each.tick(datetime(2030, 1, 10, 8, 0, tzinfo=UTC))
    assert [d["digest_day"] for d in digests(db)] == [DAY]


def test_each_notification_is_in_exactly_one_digest(
    digest_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    ada = member(db, "ada", ["entry.shared", "prompt.issued"])
    notify(db, ada, "entry.shared", "Day one")
    first = job(digest_settings)
    first.tick(AFTER_DIGEST_TIME)
    first.tick(AFTER_DIGEST_TIME + timedelta(hours=1))  # once a day
    assert len(digests(db)) == 1
    notify(db, ada, "prompt.issued", "Day two")
    restarted = job(digest_settings)  # a new process: looks once more, finds nothing
    restarted.tick(AFTER_DIGEST_TIME + timedelta(hours=2))
    assert len(digests(db)) == 1
    restarted.tick(AFTER_DIGEST_TIME + timedelta(days=1))
    one, two = digests(db)
    assert "Day one" in one["body"]
    assert "Day two" not in one["body"]
    assert two["digest_day"] == DAY + timedelta(days=1)
    assert "Day two" in two["body"]
    assert "Day one" not in two["body"]
    restarted.tick(AFTER_DIGEST_TIME + timedelta(days=2))  # nothing new
    assert len(digests(db)) == 2


def test_missed_days_go_into_the_next_digest(
    digest_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    ada = member(db, "ada", ["entry.shared"])
    each = job(digest_settings)
    notify(db, ada, "entry.shared", "Before")
    each.tick(AFTER_DIGEST_TIME)
    notify(db, ada, "entry.shared", "During the outage")
    # Down for two days; back 7 hours after the third day's digest time:
    # past the grace, so that day is skipped too; the next covers it all.
    each.tick(AFTER_DIGEST_TIME + timedelta(days=3, hours=7))
    assert len(digests(db)) == 1
    each.tick(AFTER_DIGEST_TIME + timedelta(days=4))
    _first, latest = digests(db)
    assert latest["digest_day"] == DAY + timedelta(days=4)
    assert "During the outage" in latest["body"]
    assert "Before" not in latest["body"]


def test_notifications_still_settling_wait_for_the_next_digest(
    digest_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    ada = member(db, "ada", ["entry.shared"])
    notify(db, ada, "entry.shared", "Fresh")  # created just now: may still be committing
    each = job(digest_settings, settle=30.0)
    each.tick(AFTER_DIGEST_TIME)
    assert digests(db) == []
    notify(db, ada, "entry.shared", "Settled", age=60)
    job(digest_settings, settle=30.0).tick(AFTER_DIGEST_TIME)
    (digest,) = digests(db)
    assert "Settled" in digest["body"]
    assert "Fresh" not in digest["body"]


def test_a_digest_lists_what_was_stored_for_it_not_what_the_preferences_say_now(
    digest_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    # Ada had entry.shared emailed at once: these two were emailed already.
    ada = member(db, "ada", [])
    notify(db, ada, "entry.shared", "Emailed first", email="immediate", age=120)
    notify(db, ada, "entry.shared", "Emailed second", email="immediate", age=90)
    # Then she switched it to the digest: only what came after is digested.
    db.execute(
        "INSERT INTO reads.notification_preferences (team_id, user_id, kind, inbox, email,"
        " digest) VALUES (%s, %s, 'entry.shared', true, false, true)",
        (TEAM, ada),
    )
    notify(db, ada, "entry.shared", "Digested", age=60)
    # Bob had quota notices digested, then switched the digest off: those
    # stored for the digest are still digested (once); none is lost.
    bob = member(db, "bob", [])
    notify(db, bob, "team.quota_exhausted", "Quota used up", age=60)
    job(digest_settings).tick(AFTER_DIGEST_TIME)
    by_user = {d["user_id"]: d for d in digests(db)}
    assert set(by_user) == {ada, bob}
    assert "1 new" in by_user[ada]["subject"]
    assert "Digested" in by_user[ada]["body"]
    assert "Emailed" not in by_user[ada]["body"]
    assert "Quota used up" in by_user[bob]["body"]
