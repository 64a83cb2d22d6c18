"""Webhook deliveries as clients read and steer them: lists, one delivery with its
attempts, resend, recovery, and an endpoint's health (named SQL).

The delivery worker writes these tables (migration 0004); this module only reads
them, except for resend and recovery, which start a new round of attempts and
wake the workers. Every query is scoped by team and endpoint: a delivery of
another team's endpoint is never read nor changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

import orjson
from psycopg import sql

from infra.deliveries import DUE_CHANNEL, STATUSES
from projections.pagination import Page, decode_cursor, page_of
from projections.reading import Conn, fetch_all, fetch_one, iso, iso_or_none, where

__all__ = [
    "ATTEMPTS_LOG_LIMIT",
    "DeliveryFilter",
    "attempt_view",
    "delivery_detail",
    "delivery_view",
    "endpoint_health",
    "get_delivery",
    "list_attempts",
    "list_deliveries",
    "recent_attempts",
    "recover_endpoint",
    "resend_delivery",
]

# The single-delivery view carries at most this many attempts (the newest).
ATTEMPTS_LOG_LIMIT: Final = 100

_OF_ENDPOINT: Final = "team_id = %(team_id)s AND endpoint_id = %(endpoint_id)s"

LIST_DELIVERIES: Final = sql.SQL("""
SELECT id, event_id, event_type, position, status, attempts, round_start, last_status_code,
    last_error, next_attempt_at, created_at, updated_at, delivered_at
FROM webhook_deliveries WHERE {} ORDER BY id DESC LIMIT %(limit)s
""")
_DELIVERY_FILTERS: Final = {
    "statuses": "status = ANY(%(statuses)s)",
    "event_types": "event_type = ANY(%(event_types)s)",
    "since": "created_at >= %(since)s",
    "until": "created_at < %(until)s",
    "before": "id < %(before)s",
}
_DELIVERIES_CURSOR: Final = "webhook_deliveries"

SELECT_DELIVERY: Final = """
SELECT id, event_id, event_type, position, status, attempts, round_start, last_status_code,
    last_error, next_attempt_at, created_at, updated_at, delivered_at, body
FROM webhook_deliveries
WHERE id = %(id)s AND team_id = %(team_id)s AND endpoint_id = %(endpoint_id)s
"""

# Attempts are read only through their delivery, so the team and endpoint scope holds.
LIST_ATTEMPTS: Final = """
SELECT a.attempt, a.started_at, a.duration_ms, a.status_code, a.error, a.response_excerpt
FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
WHERE d.id = %(id)s AND d.team_id = %(team_id)s AND d.endpoint_id = %(endpoint_id)s
    AND a.attempt > %(after)s
ORDER BY a.attempt LIMIT %(limit)s
"""
_ATTEMPTS_CURSOR: Final = "webhook_attempts"
# The newest ``limit`` attempts, oldest first.
RECENT_ATTEMPTS: Final = """
SELECT * FROM (
    SELECT a.attempt, a.started_at, a.duration_ms, a.status_code, a.error, a.response_excerpt
    FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
    WHERE d.id = %(id)s AND d.team_id = %(team_id)s AND d.endpoint_id = %(endpoint_id)s
    ORDER BY a.attempt DESC LIMIT %(limit)s
) newest ORDER BY attempt
"""

# A new round, due now, from any status; the retry schedule counts from round_start.
RESEND_DELIVERY: Final = """
UPDATE webhook_deliveries
SET status = 'pending', next_attempt_at = now(), round_start = attempts, updated_at = now()
WHERE id = %(id)s AND team_id = %(team_id)s AND endpoint_id = %(endpoint_id)s
RETURNING id, event_id, event_type, position, status, attempts, round_start, last_status_code,
    last_error, next_attempt_at, created_at, updated_at, delivered_at
"""
RECOVER_ENDPOINT: Final = """
UPDATE webhook_deliveries
SET status = 'pending', next_attempt_at = now(), round_start = attempts, updated_at = now()
WHERE team_id = %(team_id)s AND endpoint_id = %(endpoint_id)s
    AND status IN ('failed', 'canceled') AND created_at >= %(since)s
"""
NOTIFY_DUE: Final = "SELECT pg_notify(%(channel)s, '')"

HEALTH_WINDOW: Final = """
SELECT now() AS window_end, now() - %(hours)s * interval '1 hour' AS window_start
"""
SELECT_HEALTH: Final = """
SELECT failing_since, consecutive_failures, last_success_at, last_failure_at
FROM webhook_endpoint_health WHERE endpoint_id = %(endpoint_id)s AND team_id = %(team_id)s
"""
COUNT_DELIVERIES: Final = """
SELECT status, count(*) AS n FROM webhook_deliveries
WHERE team_id = %(team_id)s AND endpoint_id = %(endpoint_id)s AND created_at >= %(start)s
GROUP BY status
"""
ATTEMPT_STATS: Final = """
SELECT count(*) AS attempts,
    count(*) FILTER (WHERE a.status_code BETWEEN 200 AND 299) AS succeeded,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms) AS p50,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY a.duration_ms) AS p95
FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
WHERE d.team_id = %(team_id)s AND d.endpoint_id = %(endpoint_id)s AND a.started_at >= %(start)s
"""
BACKLOG: Final = """
SELECT count(*) AS pending, min(created_at) AS oldest FROM webhook_deliveries
WHERE team_id = %(team_id)s AND endpoint_id = %(endpoint_id)s AND status = 'pending'
"""


# -- views ---------------------------------------------------------------------------


def delivery_view(row: dict[str, Any]) -> dict[str, Any]:
    """A delivery as lists show it (never its body)."""
    pending = row["status"] == "pending"
    return {
        "id": row["id"],
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "position": row["position"],
        "status": row["status"],
        "attempts": row["attempts"] - row["round_start"],
        "total_attempts": row["attempts"],
        "last_status_code": row["last_status_code"],
        "last_error": row["last_error"],
        "next_attempt_at": iso_or_none(row["next_attempt_at"]) if pending else None,
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "delivered_at": iso_or_none(row["delivered_at"]),
    }


def attempt_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "attempt": row["attempt"],
        "started_at": iso(row["started_at"]),
        "duration_ms": row["duration_ms"],
        "status_code": row["status_code"],
        "error": row["error"],
        "response_excerpt": row["response_excerpt"],
    }


def delivery_detail(row: dict[str, Any], attempts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One delivery: the list view, the body as sent (parsed), its attempts."""
    return {
        **delivery_view(row),
        "payload": orjson.loads(row["body"]),
        "attempts_log": [attempt_view(a) for a in attempts],
    }


# -- reads ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    """Optional filters of the list; ``None`` leaves one out. ``since`` is
    inclusive and ``until`` exclusive, both on ``created_at``."""

    statuses: Sequence[str] | None = None
    event_types: Sequence[str] | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        unknown = set(self.statuses or ()) - set(STATUSES)
        if unknown:
            raise ValueError(f"unknown delivery statuses: {sorted(unknown)}")


def list_deliveries(
    conn: Conn,
    team_id: UUID,
    endpoint_id: UUID,
    filters: DeliveryFilter,
    *,
    limit: int,
    cursor: str | None,
) -> Page:
    """Newest first (by id); raises InvalidCursor."""
    params: dict[str, Any] = {
        "team_id": team_id,
        "endpoint_id": endpoint_id,
        "statuses": list(filters.statuses) if filters.statuses else None,
        "event_types": list(filters.event_types) if filters.event_types else None,
        "since": filters.since,
        "until": filters.until,
        "before": decode_cursor(_DELIVERIES_CURSOR, cursor, int)[0] if cursor else None,
        "limit": limit + 1,
    }
    query = LIST_DELIVERIES.format(where(_DELIVERY_FILTERS, params, _OF_ENDPOINT))
    return page_of(fetch_all(conn, query, params), limit, _DELIVERIES_CURSOR, "id")


def get_delivery(
    conn: Conn, team_id: UUID, endpoint_id: UUID, delivery_id: int
) -> dict[str, Any] | None:
    """The delivery with its body, if it is of this team's endpoint."""
    params = {"id": delivery_id, "team_id": team_id, "endpoint_id": endpoint_id}
    return fetch_one(conn, SELECT_DELIVERY, params)


def recent_attempts(
    conn: Conn,
    team_id: UUID,
    endpoint_id: UUID,
    delivery_id: int,
    *,
    limit: int = ATTEMPTS_LOG_LIMIT,
) -> list[dict[str, Any]]:
    """The newest ``limit`` attempts of the delivery, oldest first."""
    params = {"id": delivery_id, "team_id": team_id, "endpoint_id": endpoint_id, "limit": limit}
    return fetch_all(conn, RECENT_ATTEMPTS, params)


def list_attempts(
    conn: Conn,
    team_id: UUID,
    endpoint_id: UUID,
    delivery_id: int,
    *,
    limit: int,
    cursor: str | None,
) -> Page:
    """Oldest first (by attempt number); raises InvalidCursor."""
    params: dict[str, Any] = {
        "id": delivery_id,
        "team_id": team_id,
        "endpoint_id": endpoint_id,
        "after": decode_cursor(_ATTEMPTS_CURSOR, cursor, int)[0] if cursor else 0,
        "limit": limit + 1,
    }
    return page_of(fetch_all(conn, LIST_ATTEMPTS, params), limit, _ATTEMPTS_CURSOR, "attempt")


# -- resend and recovery -------------------------------------------------------------


def resend_delivery(
    conn: Conn, team_id: UUID, endpoint_id: UUID, delivery_id: int
) -> dict[str, Any] | None:
    """Start a new round of the delivery now and wake the workers; the updated
    row, or None if the delivery is not of this team's endpoint."""
    params = {"id": delivery_id, "team_id": team_id, "endpoint_id": endpoint_id}
    with conn.transaction():
        row = fetch_one(conn, RESEND_DELIVERY, params)
        if row is not None:
            conn.execute(NOTIFY_DUE, {"channel": DUE_CHANNEL})
    return row


def recover_endpoint(conn: Conn, team_id: UUID, endpoint_id: UUID, since: datetime) -> int:
    """Start a new round now for every failed or canceled delivery of the
    endpoint created at or after ``since``; how many were requeued."""
    params = {"team_id": team_id, "endpoint_id": endpoint_id, "since": since}
    with conn.transaction():
        requeued = conn.execute(RECOVER_ENDPOINT, params).rowcount
        if requeued:
            conn.execute(NOTIFY_DUE, {"channel": DUE_CHANNEL})
    return max(requeued, 0)


# -- health --------------------------------------------------------------------------


def endpoint_health(
    conn: Conn, team_id: UUID, endpoint_id: UUID, *, window_hours: int
) -> dict[str, Any]:
    """The endpoint's failure streak, and its deliveries and attempts over the
    last ``window_hours`` (deliveries by creation, attempts by start), and its
    whole backlog. One transaction, so every figure is as of the same now()."""
    scope: dict[str, Any] = {"team_id": team_id, "endpoint_id": endpoint_id}
    with conn.transaction():
        window = fetch_one(conn, HEALTH_WINDOW, {"hours": window_hours})
        assert window is not None
        params = {**scope, "start": window["window_start"]}
        streak = fetch_one(conn, SELECT_HEALTH, scope) or {}
        counts = {r["status"]: r["n"] for r in fetch_all(conn, COUNT_DELIVERIES, params)}
        stats = fetch_one(conn, ATTEMPT_STATS, params)
        backlog = fetch_one(conn, BACKLOG, scope)
    assert stats is not None
    assert backlog is not None
    attempts: int = stats["attempts"]
    oldest: datetime | None = backlog["oldest"]
    return {
        "failing_since": iso_or_none(streak.get("failing_since")),
        "consecutive_failures": streak.get("consecutive_failures", 0),
        "last_success_at": iso_or_none(streak.get("last_success_at")),
        "last_failure_at": iso_or_none(streak.get("last_failure_at")),
        "window": {
            "hours": window_hours,
            "start": iso(window["window_start"]),
            "end": iso(window["window_end"]),
        },
        "deliveries": {status: counts.get(status, 0) for status in STATUSES},
        "attempts": {
            "count": attempts,
            "succeeded": stats["succeeded"],
            "success_rate": stats["succeeded"] / attempts if attempts else None,
            "p50_duration_ms": stats["p50"],
            "p95_duration_ms": stats["p95"],
        },
        "backlog": {
            "pending": backlog["pending"],
            "oldest_pending_at": iso_or_none(oldest),
            # A row committed after this transaction began may be a hair newer than now().
            "age_seconds": (
                None
                if oldest is None
                else max(0.0, (window["window_end"] - oldest).total_seconds())
            ),
        },
    }
