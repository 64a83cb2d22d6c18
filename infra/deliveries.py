"""Webhook deliveries as the fan-out consumer and the delivery worker write
them (named SQL; the API's reads are in ``infra.delivery_reads``).

A delivery is claimed by pushing its due time forward by a lease and counting
the attempt, in one statement with ``FOR UPDATE SKIP LOCKED``: workers never
claim the same delivery twice, and a worker killed mid-send leaves its claims
to come due again when the lease runs out. An outcome is only recorded while
the claim is still the delivery's latest (``attempts`` unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.errors import UndefinedColumn
from psycopg.rows import dict_row

from infra.delivery_policy import Outcome, Verdict
from projections.webhooks import WebhooksProjection

__all__ = [
    "DUE_CHANNEL",
    "STATUSES",
    "Attempt",
    "Claim",
    "cancel",
    "claim_due",
    "endpoints_of",
    "matched_up_to",
    "record_attempt",
    "record_deliveries",
    "record_successes",
    "seconds_until_due",
    "trace_contexts",
]

# NOTIFY on this channel whenever a delivery becomes due now (new, resent,
# recovered): the delivery workers LISTEN and claim at once.
DUE_CHANNEL: Final = "chronik_webhook_due"
STATUSES: Final = ("pending", "succeeded", "failed", "canceled")

WEBHOOKS_POSITION: Final = (
    "SELECT position FROM projection_generations WHERE projection = 'webhooks' AND state = 'active'"
)
# The first change to any endpoint after the read model's position: events
# before it are matched correctly by the read model as it stands.
FIRST_ENDPOINT_CHANGE: Final = """
SELECT min(notification_id) FROM chronik_events
WHERE notification_id > %(after)s AND notification_id <= %(upto)s AND topic = ANY (%(topics)s)
"""
# An endpoint gets the events after its registration that its filter admits,
# while it is enabled; a private entry's events are never sent (the relay
# marks them, and the consumer drops them before this).
INSERT_DELIVERIES: Final = """
INSERT INTO webhook_deliveries
    (team_id, endpoint_id, position, event_id, event_type, body, next_attempt_at)
SELECT w.team_id, w.id, e.position, e.event_id, e.type, e.body,
    now() + make_interval(secs => %(first_delay)s)
FROM unnest(%(positions)s::bigint[], %(event_ids)s::text[], %(types)s::text[],
    %(teams)s::uuid[], %(bodies)s::text[]) AS e (position, event_id, type, team_id, body)
JOIN reads.webhooks w ON w.team_id = e.team_id AND w.enabled
    AND w.created_position < e.position
    AND (cardinality(w.event_types) = 0 OR e.type = ANY (w.event_types))
ON CONFLICT (endpoint_id, position) DO NOTHING
"""
NOTIFY_DUE: Final = "SELECT pg_notify(%(channel)s, '')"
CLAIM_DUE: Final = """
WITH due AS (
    SELECT id FROM webhook_deliveries
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d
SET attempts = d.attempts + 1, updated_at = now(),
    next_attempt_at = now() + make_interval(secs => %(lease)s)
FROM due WHERE d.id = due.id
RETURNING d.id, d.team_id, d.endpoint_id, d.event_id, d.body, d.attempts, d.round_start,
    d.position
"""
# The trace context each event was appended under (tracing on; see infra.tracing).
SELECT_TRACE_CONTEXTS: Final = """
SELECT position, metadata ->> 'traceparent' FROM reads.public_events
WHERE position = ANY (%(positions)s) AND metadata ? 'traceparent'
"""
SELECT_ENDPOINTS: Final = """
SELECT w.id, w.url, w.enabled,
    coalesce(array_agg(s.secret ORDER BY s.created_at DESC, s.secret_id)
        FILTER (WHERE s.secret IS NOT NULL), '{}') AS secrets
FROM reads.webhooks w
LEFT JOIN webhook_secrets s ON s.endpoint_id = w.id
    AND (s.valid_until IS NULL OR s.valid_until > now())
WHERE w.id = ANY (%(ids)s)
GROUP BY w.id, w.url, w.enabled
"""
INSERT_ATTEMPT: Final = """
INSERT INTO webhook_attempts
    (delivery_id, attempt, started_at, duration_ms, status_code, error, response_excerpt)
VALUES (%(id)s, %(attempt)s, %(started_at)s, %(duration_ms)s, %(status_code)s, %(error)s,
    %(excerpt)s)
ON CONFLICT (delivery_id, attempt) DO NOTHING
"""
# Successes, many in one statement (one commit): each delivery, its attempt
# and its endpoint's health. A healthy endpoint's row is only touched once a
# second, so concurrent successes to one endpoint do not queue on its row
# lock; health rows are written in endpoint order, so two workers' batches
# never wait on each other's locks in opposite orders.
SUCCEEDED_MANY: Final = """
WITH sent AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[],
        %(started_at)s::timestamptz[], %(duration_ms)s::integer[], %(status_codes)s::integer[],
        %(excerpts)s::text[]) AS a (id, attempt, started_at, duration_ms, status_code, excerpt)
), delivered AS (
    UPDATE webhook_deliveries d
    SET status = 'succeeded', next_attempt_at = NULL, last_status_code = sent.status_code,
        last_error = NULL, delivered_at = now(), updated_at = now()
    FROM sent
    WHERE d.id = sent.id AND d.attempts = sent.attempt AND d.status = 'pending'
    RETURNING d.id, d.attempts, d.endpoint_id, d.team_id
), attempt AS (
    INSERT INTO webhook_attempts
        (delivery_id, attempt, started_at, duration_ms, status_code, error, response_excerpt)
    SELECT id, attempt, started_at, duration_ms, status_code, NULL, excerpt FROM sent
    ON CONFLICT (delivery_id, attempt) DO NOTHING
), health AS (
    INSERT INTO webhook_endpoint_health (endpoint_id, team_id, last_success_at)
    SELECT DISTINCT ON (endpoint_id) endpoint_id, team_id, now() FROM delivered
    ORDER BY endpoint_id
    ON CONFLICT (endpoint_id) DO UPDATE
    SET failing_since = NULL, consecutive_failures = 0, last_success_at = now()
    WHERE webhook_endpoint_health.failing_since IS NOT NULL
        OR webhook_endpoint_health.last_success_at IS NULL
        OR webhook_endpoint_health.last_success_at < now() - interval '1 second'
)
SELECT id, attempts FROM delivered
"""
# Returns for how long (seconds) the endpoint has failed with no success.
HEALTH_FAILED: Final = """
INSERT INTO webhook_endpoint_health
    (endpoint_id, team_id, failing_since, consecutive_failures, last_failure_at)
VALUES (%(endpoint_id)s, %(team_id)s, %(started_at)s, 1, now())
ON CONFLICT (endpoint_id) DO UPDATE
SET failing_since = coalesce(webhook_endpoint_health.failing_since, excluded.failing_since),
    consecutive_failures = webhook_endpoint_health.consecutive_failures + 1,
    last_failure_at = now()
RETURNING extract(epoch FROM now() - failing_since)::float8
"""
FINISH: Final = """
UPDATE webhook_deliveries
SET status = %(status)s,
    next_attempt_at = CASE WHEN %(status)s = 'pending'
        THEN now() + make_interval(secs => %(retry_in)s) END,
    last_status_code = %(status_code)s, last_error = %(error)s, updated_at = now(),
    delivered_at = CASE WHEN %(status)s = 'succeeded' THEN now() ELSE delivered_at END
WHERE id = %(id)s AND attempts = %(attempt)s AND status = 'pending'
"""
CANCEL: Final = """
UPDATE webhook_deliveries
SET status = 'canceled', next_attempt_at = NULL, last_error = %(reason)s, updated_at = now()
WHERE id = %(id)s AND attempts = %(attempt)s AND status = 'pending'
"""
# Held until the outcome is written, so a newer claim cannot slip in between.
LOCK_CLAIM: Final = """
SELECT 1 FROM webhook_deliveries
WHERE id = %(id)s AND attempts = %(attempt)s AND status = 'pending'
FOR UPDATE
"""
SECONDS_UNTIL_DUE: Final = """
SELECT extract(epoch FROM min(next_attempt_at) - now())::float8
FROM webhook_deliveries WHERE status = 'pending'
"""

Conn = AsyncConnection[Any]


@dataclass(frozen=True, slots=True)
class Claim:
    id: int
    team_id: UUID
    endpoint_id: UUID
    event_id: str
    body: str
    attempts: int  # this attempt's number among all of the delivery's attempts
    round_start: int
    position: int  # the event's

    @property
    def attempt_in_round(self) -> int:
        return self.attempts - self.round_start


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: UUID
    url: str
    enabled: bool
    secrets: list[str]


@dataclass(frozen=True, slots=True)
class Attempt:
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    excerpt: str | None


async def matched_up_to(conn: Conn, upto: int) -> int | None:
    """The last position up to ``upto`` whose events the webhooks read model
    can match now: its own position, or further while no endpoint changed in
    between (so the consumer need not wait for it to catch up on other
    events). None: the read model is not built yet."""
    cur = await conn.execute(WEBHOOKS_POSITION)
    row = await cur.fetchone()
    if row is None:
        return None
    position = int(row[0])
    if position >= upto:
        return position
    cur = await conn.execute(
        FIRST_ENDPOINT_CHANGE,
        {"after": position, "upto": upto, "topics": list(WebhooksProjection.handled)},
    )
    change = await cur.fetchone()
    return upto if change is None or change[0] is None else int(change[0]) - 1


async def record_deliveries(
    conn: Conn, events: Sequence[tuple[dict[str, Any], str]], *, first_delay: float
) -> int:
    """One delivery per matching endpoint for each (document, body), in one
    transaction, idempotently; wakes the workers if any was new."""
    async with conn.transaction():
        cur = await conn.execute(
            INSERT_DELIVERIES,
            {
                "positions": [doc["position"] for doc, _ in events],
                "event_ids": [doc["id"] for doc, _ in events],
                "types": [doc["type"] for doc, _ in events],
                "teams": [doc["team_id"] for doc, _ in events],
                "bodies": [body for _, body in events],
                "first_delay": first_delay,
            },
        )
        if cur.rowcount:
            await conn.execute(NOTIFY_DUE, {"channel": DUE_CHANNEL})
        return cur.rowcount


async def claim_due(conn: Conn, *, limit: int, lease: float) -> list[Claim]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(CLAIM_DUE, {"limit": limit, "lease": lease})
        return [Claim(**row) for row in await cur.fetchall()]


async def trace_contexts(conn: Conn, positions: list[int]) -> dict[int, str]:
    """The stored traceparent of each traced event at ``positions``."""
    try:
        cur = await conn.execute(SELECT_TRACE_CONTEXTS, {"positions": positions})
    except UndefinedColumn:  # a version-1 feed (no metadata) is still serving
        return {}
    return {int(position): traceparent for position, traceparent in await cur.fetchall()}


async def endpoints_of(conn: Conn, ids: list[UUID]) -> dict[UUID, Endpoint]:
    """Live endpoints with the secrets that sign now, newest first; a deleted
    endpoint is missing."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SELECT_ENDPOINTS, {"ids": ids})
        return {row["id"]: Endpoint(**row) for row in await cur.fetchall()}


async def record_attempt(
    conn: Conn, claim: Claim, attempt: Attempt, judge: Callable[[float | None], Verdict]
) -> Verdict | None:
    """Stores an attempt that did not succeed and the endpoint's health, then
    the delivery's new state as ``judge(failing_for)`` decides; None if the
    claim was lost. Successes go through ``record_successes``, in batches."""
    if Outcome(attempt.status_code).succeeded:
        # Here it would count against the endpoint's health.
        raise ValueError("a successful attempt is recorded by record_successes")
    params = {
        "id": claim.id,
        "attempt": claim.attempts,
        "started_at": attempt.started_at,
        "duration_ms": attempt.duration_ms,
        "status_code": attempt.status_code,
        "error": attempt.error,
        "excerpt": attempt.excerpt,
    }
    async with conn.transaction():
        cur = await conn.execute(LOCK_CLAIM, {"id": claim.id, "attempt": claim.attempts})
        current = await cur.fetchone() is not None
        await conn.execute(INSERT_ATTEMPT, params)
        if not current:
            # Superseded (the lease ran out and another worker sent it): the
            # attempt happened and is logged, but the newer claim decides.
            return None
        health = {
            "endpoint_id": claim.endpoint_id,
            "team_id": claim.team_id,
            "started_at": attempt.started_at,
        }
        cur = await conn.execute(HEALTH_FAILED, health)
        row = await cur.fetchone()
        verdict: Verdict = judge(None if row is None else float(row[0]))
        cur = await conn.execute(
            FINISH,
            {
                "id": claim.id,
                "attempt": claim.attempts,
                "status": verdict.status,
                "retry_in": verdict.retry_in or 0.0,
                "status_code": attempt.status_code,
                "error": attempt.error,
            },
        )
        return verdict if cur.rowcount == 1 else None


async def record_successes(
    conn: Conn, sent: Sequence[tuple[Claim, Attempt]]
) -> set[tuple[int, int]]:
    """Stores successful attempts (2xx) in one statement; the (delivery,
    attempt) of each that was still this claim's to settle."""
    cur = await conn.execute(
        SUCCEEDED_MANY,
        {
            "ids": [claim.id for claim, _ in sent],
            "attempts": [claim.attempts for claim, _ in sent],
            "started_at": [attempt.started_at for _, attempt in sent],
            "duration_ms": [attempt.duration_ms for _, attempt in sent],
            "status_codes": [attempt.status_code for _, attempt in sent],
            "excerpts": [attempt.excerpt for _, attempt in sent],
        },
    )
    return {(int(id_), int(attempts)) for id_, attempts in await cur.fetchall()}


async def cancel(conn: Conn, claim: Claim, reason: str) -> None:
    await conn.execute(CANCEL, {"id": claim.id, "attempt": claim.attempts, "reason": reason})


async def seconds_until_due(conn: Conn) -> float | None:
    cur = await conn.execute(SECONDS_UNTIL_DUE)
    row = await cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])
