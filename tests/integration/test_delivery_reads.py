"""The delivery queries (infra.delivery_reads) against real PostgreSQL.

The delivery worker that writes these tables is built separately, so the rows
are inserted here with SQL, as the worker would leave them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import sql

from infra import delivery_reads
from infra.deliveries import DUE_CHANNEL, STATUSES
from infra.delivery_reads import DeliveryFilter
from projections.pagination import InvalidCursor, Page

Conn = psycopg.Connection[Any]

INSERT_DELIVERY = """
INSERT INTO webhook_deliveries (team_id, endpoint_id, position, event_id, event_type, body,
    status, attempts, round_start, next_attempt_at, last_status_code, last_error, created_at,
    updated_at, delivered_at)
VALUES (%(team_id)s, %(endpoint_id)s, %(position)s, %(event_id)s, %(event_type)s, %(body)s,
    %(status)s, %(attempts)s, %(round_start)s, %(next_attempt_at)s, %(last_status_code)s,
    %(last_error)s, %(created_at)s, %(created_at)s, %(delivered_at)s)
RETURNING id
"""
INSERT_ATTEMPT = """
INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, status_code, error,
    response_excerpt)
VALUES (%s, %s, %s, %s, %s, %s, %s)
"""
SELECT_ROW = "SELECT * FROM webhook_deliveries WHERE id = %s"


class Endpoint:
    """One endpoint of one team, with a counter for its event positions."""

    positions = iter(range(1, 1_000_000))

    def __init__(self, conn: Conn, team_id: UUID | None = None) -> None:
        self.conn = conn
        self.team_id = team_id or uuid.uuid4()
        self.id = uuid.uuid4()

    def delivery(
        self,
        *,
        status: str = "pending",
        event_type: str = "entry.created",
        attempts: int = 0,
        round_start: int = 0,
        age: timedelta = timedelta(0),
        last_status_code: int | None = None,
    ) -> int:
        position = next(self.positions)
        created_at = datetime.now(UTC) - age
        row = self.conn.execute(
            INSERT_DELIVERY,
            {
                "team_id": self.team_id,
                "endpoint_id": self.id,
                "position": position,
                "event_id": f"evt_{position}",
                "event_type": event_type,
                "body": f'{{"id": "evt_{position}", "type": "{event_type}", "data": {{}}}}',
                "status": status,
                "attempts": attempts,
                "round_start": round_start,
                "next_attempt_at": created_at if status == "pending" else None,
                "last_status_code": last_status_code,
                "last_error": "HTTP 500" if status == "failed" else None,
                "created_at": created_at,
                "delivered_at": created_at if status == "succeeded" else None,
            },
        ).fetchone()
        assert row is not None
        delivery_id: int = row[0]
        return delivery_id

    def attempt(
        self,
        delivery_id: int,
        number: int,
        *,
        duration_ms: int = 100,
        status_code: int | None = 200,
        age: timedelta = timedelta(0),
    ) -> None:
        error = None if status_code is not None else "timed out"
        self.conn.execute(
            INSERT_ATTEMPT,
            (
                delivery_id,
                number,
                datetime.now(UTC) - age,
                duration_ms,
                status_code,
                error,
                "ok" if status_code else None,
            ),
        )

    def page(self, filters: DeliveryFilter | None = None, **kwargs: Any) -> Page:
        return delivery_reads.list_deliveries(
            self.conn, self.team_id, self.id, filters or DeliveryFilter(), **kwargs
        )

    def ids(self, filters: DeliveryFilter | None = None) -> list[int]:
        return [r["id"] for r in self.page(filters, limit=200, cursor=None).rows]


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def listener(database_url: str) -> Iterator[Conn]:
    """A second connection, listening on the channel the delivery workers wake on."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(DUE_CHANNEL)))
        yield conn


def wakeups(listener: Conn, timeout: float) -> list[str]:
    """The due notifications received within ``timeout`` (stopping at the first)."""
    return [n.channel for n in listener.notifies(timeout=timeout, stop_after=1)]


def row_of(conn: Conn, delivery_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(SELECT_ROW, (delivery_id,)).fetchone()
    assert row is not None
    return row


# -- lists ---------------------------------------------------------------------------


def test_deliveries_list_newest_first_with_every_filter(conn: Conn) -> None:
    hook = Endpoint(conn)
    old_failed = hook.delivery(status="failed", age=timedelta(hours=30), attempts=8)
    canceled = hook.delivery(status="canceled", age=timedelta(hours=10))
    edited = hook.delivery(status="succeeded", event_type="entry.edited", age=timedelta(hours=2))
    pending = hook.delivery(status="pending", age=timedelta(minutes=5))
    now = datetime.now(UTC)

    assert hook.ids() == [pending, edited, canceled, old_failed]
    assert hook.ids(DeliveryFilter(statuses=["failed", "canceled"])) == [canceled, old_failed]
    assert hook.ids(DeliveryFilter(statuses=["succeeded"])) == [edited]
    assert hook.ids(DeliveryFilter(event_types=["entry.edited"])) == [edited]
    assert hook.ids(DeliveryFilter(event_types=["entry.created", "entry.deleted"])) == [
        pending,
        canceled,
        old_failed,
    ]
    assert hook.ids(DeliveryFilter(since=now - timedelta(hours=12))) == [pending, edited, canceled]
    assert hook.ids(DeliveryFilter(until=now - timedelta(hours=1))) == [
        edited,
        canceled,
        old_failed,
    ]
    window = DeliveryFilter(since=now - timedelta(hours=12), until=now - timedelta(hours=1))
    assert hook.ids(window) == [edited, canceled]
    combined = DeliveryFilter(statuses=["canceled", "pending"], since=now - timedelta(hours=12))
    assert hook.ids(combined) == [pending, canceled]
    assert hook.ids(DeliveryFilter(statuses=["pending"], until=now - timedelta(hours=1))) == []


def test_since_is_inclusive_and_until_exclusive(conn: Conn) -> None:
    hook = Endpoint(conn)
    only = hook.delivery()
    created_at = row_of(conn, only)["created_at"]
    assert hook.ids(DeliveryFilter(since=created_at)) == [only]
    assert hook.ids(DeliveryFilter(until=created_at)) == []
    assert hook.ids(DeliveryFilter(until=created_at + timedelta(microseconds=1))) == [only]


def test_an_unknown_status_is_refused_before_any_query() -> None:
    with pytest.raises(ValueError, match="unknown delivery statuses"):
        DeliveryFilter(statuses=["delivered"])


def test_the_list_view_counts_this_round_and_hides_the_body(conn: Conn) -> None:
    hook = Endpoint(conn)
    failed = hook.delivery(status="failed", attempts=11, round_start=8, last_status_code=503)
    pending = hook.delivery(status="pending", attempts=2, round_start=0)
    views = {
        v["id"]: v for v in map(delivery_reads.delivery_view, hook.page(limit=10, cursor=None).rows)
    }
    assert set(views[failed]) == {
        "id", "event_id", "event_type", "position", "status", "attempts", "total_attempts",
        "last_status_code", "last_error", "next_attempt_at", "created_at", "updated_at",
        "delivered_at",
    }  # fmt: skip
    assert (views[failed]["attempts"], views[failed]["total_attempts"]) == (3, 11)
    assert views[failed]["last_status_code"] == 503
    assert views[failed]["next_attempt_at"] is None
    assert views[failed]["event_id"] == f"evt_{views[failed]['position']}"
    assert views[pending]["next_attempt_at"] is not None
    assert views[pending]["created_at"].endswith("+00:00")
    assert "body" not in views[pending]


def test_pages_have_no_duplicates_nor_gaps_while_deliveries_arrive(conn: Conn) -> None:
    hook = Endpoint(conn)
    first = [hook.delivery(status=STATUSES[n % 4]) for n in range(23)]
    pages: list[list[int]] = []
    cursor = None
    while True:
        page = hook.page(limit=5, cursor=cursor)
        pages.append([r["id"] for r in page.rows])
        hook.delivery()  # newer than every page: never shifts the pages still to come
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [i for p in pages for i in p] == sorted(first, reverse=True)


def test_pages_follow_the_filters(conn: Conn) -> None:
    hook = Endpoint(conn)
    failed = [hook.delivery(status="failed" if n % 2 else "succeeded") for n in range(10)][1::2]
    filters = DeliveryFilter(statuses=["failed"])
    page = hook.page(filters, limit=3, cursor=None)
    rest = hook.page(filters, limit=3, cursor=page.next_cursor)
    assert [r["id"] for r in page.rows + rest.rows] == sorted(failed, reverse=True)
    assert rest.next_cursor is None


def test_a_cursor_not_of_this_list_is_refused(conn: Conn) -> None:
    hook = Endpoint(conn)
    delivery = hook.delivery()
    for n in range(1, 4):
        hook.attempt(delivery, n)
    attempts_cursor = delivery_reads.list_attempts(
        conn, hook.team_id, hook.id, delivery, limit=1, cursor=None
    ).next_cursor
    assert attempts_cursor is not None
    for cursor in ("not-a-cursor", "W10", attempts_cursor):
        with pytest.raises(InvalidCursor):
            hook.page(limit=5, cursor=cursor)


# -- one delivery and its attempts ----------------------------------------------------


def test_one_delivery_carries_its_body_and_newest_hundred_attempts_oldest_first(
    conn: Conn,
) -> None:
    hook = Endpoint(conn)
    delivery = hook.delivery(status="failed", attempts=105, round_start=100)
    for n in range(1, 106):
        hook.attempt(delivery, n, duration_ms=n, status_code=500 if n < 105 else None)
    row = delivery_reads.get_delivery(conn, hook.team_id, hook.id, delivery)
    assert row is not None
    attempts = delivery_reads.recent_attempts(conn, hook.team_id, hook.id, delivery)
    detail = delivery_reads.delivery_detail(row, attempts)
    assert detail["payload"] == {"id": detail["event_id"], "type": "entry.created", "data": {}}
    log = detail["attempts_log"]
    assert [a["attempt"] for a in log] == list(range(6, 106))
    assert set(log[0]) == {
        "attempt", "started_at", "duration_ms", "status_code", "error", "response_excerpt",
    }  # fmt: skip
    assert (log[-1]["status_code"], log[-1]["error"]) == (None, "timed out")
    assert (detail["attempts"], detail["total_attempts"]) == (5, 105)


def test_attempts_page_oldest_first(conn: Conn) -> None:
    hook = Endpoint(conn)
    delivery = hook.delivery(attempts=7)
    other = hook.delivery(attempts=2)
    for n in range(1, 8):
        hook.attempt(delivery, n)
    for n in range(1, 3):
        hook.attempt(other, n)
    numbers: list[int] = []
    cursor = None
    while True:
        page = delivery_reads.list_attempts(
            conn, hook.team_id, hook.id, delivery, limit=3, cursor=cursor
        )
        numbers += [r["attempt"] for r in page.rows]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert numbers == list(range(1, 8))


# -- tenancy -------------------------------------------------------------------------


def test_another_teams_deliveries_are_never_read_nor_changed(conn: Conn, listener: Conn) -> None:
    ours = Endpoint(conn)
    theirs = Endpoint(conn)
    ours.delivery(status="failed")
    their_delivery = theirs.delivery(status="failed", attempts=3)
    theirs.attempt(their_delivery, 1)
    before = row_of(conn, their_delivery)

    # Our team with their endpoint, and our endpoint with their delivery.
    assert (
        delivery_reads.list_deliveries(
            conn, ours.team_id, theirs.id, DeliveryFilter(), limit=50, cursor=None
        ).rows
        == []
    )
    assert their_delivery not in ours.ids()
    for team_id, endpoint_id in ((ours.team_id, theirs.id), (ours.team_id, ours.id)):
        assert delivery_reads.get_delivery(conn, team_id, endpoint_id, their_delivery) is None
        assert delivery_reads.recent_attempts(conn, team_id, endpoint_id, their_delivery) == []
        attempts = delivery_reads.list_attempts(
            conn, team_id, endpoint_id, their_delivery, limit=10, cursor=None
        )
        assert attempts.rows == []
        assert delivery_reads.resend_delivery(conn, team_id, endpoint_id, their_delivery) is None
    since = datetime.now(UTC) - timedelta(days=1)
    assert delivery_reads.recover_endpoint(conn, ours.team_id, theirs.id, since) == 0
    assert row_of(conn, their_delivery) == before
    assert wakeups(listener, 0.3) == []
    health = delivery_reads.endpoint_health(conn, ours.team_id, theirs.id, window_hours=24)
    assert health["deliveries"] == dict.fromkeys(STATUSES, 0)
    assert health["attempts"]["count"] == 0


# -- resend and recovery -------------------------------------------------------------


def test_resend_starts_a_new_round_due_now_and_wakes_the_workers(
    conn: Conn, listener: Conn
) -> None:
    hook = Endpoint(conn)
    delivered = hook.delivery(status="succeeded", attempts=3, age=timedelta(hours=1))
    before = row_of(conn, delivered)
    row = delivery_reads.resend_delivery(conn, hook.team_id, hook.id, delivered)
    assert wakeups(listener, 5) == [DUE_CHANNEL]

    assert row is not None
    after = row_of(conn, delivered)
    db_now = conn.execute("SELECT now()").fetchone()
    assert db_now is not None
    assert after["status"] == "pending"
    assert (after["attempts"], after["round_start"]) == (3, 3)
    assert before["updated_at"] < after["updated_at"] <= db_now[0]
    assert after["next_attempt_at"] == after["updated_at"]  # due now
    assert after["delivered_at"] == before["delivered_at"]  # history is kept
    view = delivery_reads.delivery_view(row)
    assert (view["status"], view["attempts"], view["total_attempts"]) == ("pending", 0, 3)
    assert view["next_attempt_at"] is not None


def test_resending_a_pending_delivery_makes_it_due_now(conn: Conn, listener: Conn) -> None:
    hook = Endpoint(conn)
    pending = hook.delivery(status="pending", attempts=2, round_start=1)
    later = datetime.now(UTC) + timedelta(hours=2)
    conn.execute(
        "UPDATE webhook_deliveries SET next_attempt_at = %s WHERE id = %s", (later, pending)
    )
    row = delivery_reads.resend_delivery(conn, hook.team_id, hook.id, pending)
    assert row is not None
    assert row["next_attempt_at"] < later - timedelta(hours=1)
    assert (row["attempts"], row["round_start"]) == (2, 2)
    assert wakeups(listener, 5) == [DUE_CHANNEL]


def test_recover_requeues_only_failed_and_canceled_since_the_time(
    conn: Conn, listener: Conn
) -> None:
    hook = Endpoint(conn)
    other = Endpoint(conn, hook.team_id)  # same team, another endpoint
    old = hook.delivery(status="failed", age=timedelta(hours=5), attempts=8)
    requeued = [
        hook.delivery(status="failed", age=timedelta(hours=2), attempts=8),
        hook.delivery(status="canceled", age=timedelta(hours=1), attempts=1),
    ]
    untouched = [
        hook.delivery(status="succeeded", age=timedelta(hours=1), attempts=1),
        hook.delivery(status="pending", age=timedelta(minutes=1)),
        other.delivery(status="failed", age=timedelta(hours=1), attempts=8),
        old,
    ]
    before = {d: row_of(conn, d) for d in untouched}

    since = datetime.now(UTC) - timedelta(hours=3)
    assert delivery_reads.recover_endpoint(conn, hook.team_id, hook.id, since) == 2
    assert wakeups(listener, 5) == [DUE_CHANNEL]
    for delivery in requeued:
        row = row_of(conn, delivery)
        assert row["status"] == "pending"
        assert row["round_start"] == row["attempts"]
        assert row["next_attempt_at"] is not None
    assert {d: row_of(conn, d) for d in untouched} == before

    # Nothing left to recover: nothing requeued, no wake-up.
    assert delivery_reads.recover_endpoint(conn, hook.team_id, hook.id, since) == 0
    assert wakeups(listener, 0.3) == []


# -- health --------------------------------------------------------------------------


def test_health_of_an_endpoint_with_no_history(conn: Conn) -> None:
    hook = Endpoint(conn)
    health = delivery_reads.endpoint_health(conn, hook.team_id, hook.id, window_hours=24)
    assert health["failing_since"] is None
    assert health["consecutive_failures"] == 0
    assert health["last_success_at"] is None
    assert health["last_failure_at"] is None
    assert health["deliveries"] == {"pending": 0, "succeeded": 0, "failed": 0, "canceled": 0}
    assert health["attempts"] == {
        "count": 0,
        "succeeded": 0,
        "success_rate": None,
        "p50_duration_ms": None,
        "p95_duration_ms": None,
    }
    assert health["backlog"] == {"pending": 0, "oldest_pending_at": None, "age_seconds": None}
    assert health["window"]["hours"] == 24


def test_health_figures_over_the_window(conn: Conn) -> None:
    hook = Endpoint(conn)
    failing_since = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    conn.execute(
        "INSERT INTO webhook_endpoint_health (endpoint_id, team_id, failing_since, "
        "consecutive_failures, last_success_at, last_failure_at) VALUES (%s, %s, %s, 4, %s, %s)",
        (hook.id, hook.team_id, failing_since, failing_since - timedelta(hours=1), failing_since),
    )
    # Deliveries in the window: 2 succeeded, 1 failed, 1 pending; outside: 1 pending, 1 failed.
    done = hook.delivery(status="succeeded", age=timedelta(hours=3), attempts=2)
    done_too = hook.delivery(status="succeeded", age=timedelta(hours=2), attempts=1)
    failed = hook.delivery(status="failed", age=timedelta(hours=1), attempts=2)
    hook.delivery(status="pending", age=timedelta(minutes=10))
    stale = hook.delivery(status="pending", age=timedelta(hours=30), attempts=1)
    hook.delivery(status="failed", age=timedelta(hours=40))
    # Attempts in the window: 100, 200, 300, 400 and 1000 ms; 3 of 5 answered 2xx.
    hook.attempt(done, 1, duration_ms=1000, status_code=None)
    hook.attempt(done, 2, duration_ms=100, status_code=200)
    hook.attempt(done_too, 1, duration_ms=200, status_code=204)
    hook.attempt(failed, 1, duration_ms=300, status_code=300)  # 3xx is a failure
    hook.attempt(failed, 2, duration_ms=400, status_code=299)
    # Outside the window: an attempt of an old delivery, made 25 hours ago.
    hook.attempt(stale, 1, duration_ms=9000, status_code=200, age=timedelta(hours=25))

    health = delivery_reads.endpoint_health(conn, hook.team_id, hook.id, window_hours=24)
    assert health["failing_since"] == failing_since.isoformat()
    assert health["consecutive_failures"] == 4
    assert health["last_failure_at"] == failing_since.isoformat()
    assert health["deliveries"] == {"pending": 1, "succeeded": 2, "failed": 1, "canceled": 0}
    stats = health["attempts"]
    assert (stats["count"], stats["succeeded"]) == (5, 3)
    assert stats["success_rate"] == pytest.approx(0.6)
    assert stats["p50_duration_ms"] == pytest.approx(300)
    # percentile_cont: rank 0.95 * (5 - 1) = 3.8, between 400 and 1000.
    assert stats["p95_duration_ms"] == pytest.approx(400 + 0.8 * 600)
    backlog = health["backlog"]
    assert backlog["pending"] == 2  # overall, not only in the window
    assert (
        backlog["oldest_pending_at"]
        == row_of(conn, stale)["created_at"].astimezone(UTC).isoformat()
    )
    assert 30 * 3600 - 60 < backlog["age_seconds"] < 30 * 3600 + 60

    wide = delivery_reads.endpoint_health(conn, hook.team_id, hook.id, window_hours=48)
    assert wide["deliveries"] == {"pending": 2, "succeeded": 2, "failed": 2, "canceled": 0}
    assert wide["attempts"]["count"] == 6
    start = datetime.fromisoformat(wide["window"]["start"])
    end = datetime.fromisoformat(wide["window"]["end"])
    assert end - start == timedelta(hours=48)
