"""The email outbox as the notification consumer, the digest job and the
email sender write it (named SQL, parameters only).

An email is claimed by pushing its due time forward by a lease and counting
the attempt, in one statement with ``FOR UPDATE SKIP LOCKED``: senders never
claim the same email twice, and a sender killed mid-send leaves its claims to
come due again when the lease runs out. A failure is only recorded while the
claim is still the email's latest (``attempts`` unchanged); a success is
final and is recorded whichever claim it came from (a newer claim would only
send the email again). Every attempt, current or not, is logged in
``email_attempts``. Nothing here reads or writes ``notifications``: an email
that fails never affects the inbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal
from uuid import UUID

import psycopg
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import dict_row

__all__ = [
    "CLAIM_DUE",
    "COUNTS",
    "DUE_CHANNEL",
    "INSERT_DIGEST",
    "NOTIFY_DUE",
    "Attempt",
    "Claim",
    "Counts",
    "Decision",
    "announce",
    "announce_sync",
    "claim_due",
    "counts",
    "decide",
    "record_attempt",
    "seconds_until_due",
]

# A new email due now wakes the senders: whoever inserts into email_outbox
# runs NOTIFY_DUE (or ``announce``) in the same transaction; PostgreSQL
# delivers it on commit.
DUE_CHANNEL: Final = "chronik_email_due"
NOTIFY_DUE: Final = "SELECT pg_notify('chronik_email_due', '')"

CLAIM_DUE: Final = """
WITH due AS (
    SELECT id FROM email_outbox
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at, id LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE email_outbox o
SET attempts = o.attempts + 1, next_attempt_at = now() + make_interval(secs => %(lease)s)
FROM due WHERE o.id = due.id
RETURNING o.id, o.team_id, o.user_id, o.to_address, o.subject, o.body, o.attempts
"""
INSERT_ATTEMPT: Final = """
INSERT INTO email_attempts (email_id, attempt, started_at, duration_ms, outcome, error)
VALUES (%(id)s, %(attempt)s, %(started_at)s, %(duration_ms)s, %(outcome)s, %(error)s)
ON CONFLICT (email_id, attempt) DO NOTHING
"""
# Sent is final, from any claim (see the module's docstring).
SENT: Final = """
UPDATE email_outbox SET status = 'sent', sent_at = now(), last_error = NULL
WHERE id = %(id)s AND status = 'pending'
"""
# Held until the outcome is written, so a newer claim cannot slip in between.
LOCK_CLAIM: Final = """
SELECT 1 FROM email_outbox
WHERE id = %(id)s AND attempts = %(attempt)s AND status = 'pending'
FOR UPDATE
"""
FAILED_ATTEMPT: Final = """
UPDATE email_outbox
SET status = %(status)s, last_error = %(error)s,
    next_attempt_at = CASE WHEN %(status)s = 'pending'
        THEN now() + make_interval(secs => %(retry_in)s) ELSE next_attempt_at END
WHERE id = %(id)s AND attempts = %(attempt)s AND status = 'pending'
"""
SECONDS_UNTIL_DUE: Final = """
SELECT extract(epoch FROM min(next_attempt_at) - now())::float8
FROM email_outbox WHERE status = 'pending'
"""
# For /metrics. oldest_due_seconds: how long the longest-waiting due email
# has been due (0 when none is); a claimed email is not due until its lease
# runs out.
COUNTS: Final = """
SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
    count(*) FILTER (WHERE status = 'sent') AS sent,
    count(*) FILTER (WHERE status = 'failed') AS failed,
    coalesce(extract(epoch FROM now() - min(next_attempt_at)
        FILTER (WHERE status = 'pending' AND next_attempt_at <= now()))::float8, 0)
        AS oldest_due_seconds
FROM email_outbox
"""
# A member's digest of one day, at most once (the UNIQUE (team_id, user_id,
# digest_day)); created_at is the transaction's now(), the end of the window
# the digest covers (see infra.digests).
INSERT_DIGEST: Final = """
INSERT INTO email_outbox (team_id, user_id, digest_day, to_address, subject, body)
VALUES (%(team_id)s, %(user_id)s, %(day)s, %(to_address)s, %(subject)s, %(body)s)
ON CONFLICT (team_id, user_id, digest_day) DO NOTHING
"""

Conn = AsyncConnection[Any]
Status = Literal["pending", "sent", "failed"]


@dataclass(frozen=True, slots=True)
class Claim:
    id: int
    team_id: UUID
    user_id: UUID
    to_address: str
    subject: str
    body: str
    attempts: int  # this attempt's number (1 is the first)


@dataclass(frozen=True, slots=True)
class Attempt:
    started_at: datetime
    duration_ms: int
    error: str | None  # None: the server accepted the message
    permanent: bool = False  # the server refused it for good (5xx to RCPT or DATA)

    @property
    def sent(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Decision:
    status: Status
    retry_in: float | None = None


@dataclass(frozen=True, slots=True)
class Counts:
    pending: int
    sent: int
    failed: int
    oldest_due_seconds: float


def decide(attempt: Attempt, *, number: int, schedule: Sequence[float]) -> Decision:
    """What becomes of an email after its attempt ``number`` (1 is the first):
    ``schedule[i]`` is the delay before attempt i+1, so an email gets
    ``len(schedule)`` attempts at most; a permanent refusal fails it at once."""
    if attempt.sent:
        return Decision("sent")
    if attempt.permanent or number >= len(schedule):
        return Decision("failed")
    return Decision("pending", retry_in=schedule[number])


async def announce(cur: AsyncCursor[Any] | AsyncConnection[Any]) -> None:
    """Wakes the email senders when the current transaction commits."""
    await cur.execute(NOTIFY_DUE)


def announce_sync(cur: psycopg.Cursor[Any] | psycopg.Connection[Any]) -> None:
    cur.execute(NOTIFY_DUE)


async def claim_due(conn: Conn, *, limit: int, lease: float) -> list[Claim]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(CLAIM_DUE, {"limit": limit, "lease": lease})
        return [Claim(**row) for row in await cur.fetchall()]


async def record_attempt(
    conn: Conn, claim: Claim, attempt: Attempt, schedule: Sequence[float]
) -> Decision | None:
    """Logs the attempt and stores the email's new state; None if this claim
    no longer decides (a failure after the lease ran out and the email was
    claimed again, or the email is no longer pending)."""
    decision = decide(attempt, number=claim.attempts, schedule=schedule)
    params = {
        "id": claim.id,
        "attempt": claim.attempts,
        "started_at": attempt.started_at,
        "duration_ms": attempt.duration_ms,
        "outcome": "sent" if attempt.sent else "failed",
        "error": attempt.error,
    }
    async with conn.transaction():
        await conn.execute(INSERT_ATTEMPT, params)
        if attempt.sent:
            cur = await conn.execute(SENT, {"id": claim.id})
            return decision if cur.rowcount == 1 else None
        cur = await conn.execute(LOCK_CLAIM, {"id": claim.id, "attempt": claim.attempts})
        if await cur.fetchone() is None:
            return None
        cur = await conn.execute(
            FAILED_ATTEMPT,
            {
                "id": claim.id,
                "attempt": claim.attempts,
                "status": decision.status,
                "retry_in": decision.retry_in or 0.0,
                "error": attempt.error,
            },
        )
        return decision if cur.rowcount == 1 else None


async def seconds_until_due(conn: Conn) -> float | None:
    cur = await conn.execute(SECONDS_UNTIL_DUE)
    row = await cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def counts(conn: Conn) -> Counts:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(COUNTS)
        row = await cur.fetchone()
    assert row is not None  # an aggregate always returns a row
    return Counts(
        pending=int(row["pending"]),
        sent=int(row["sent"]),
        failed=int(row["failed"]),
        oldest_due_seconds=float(row["oldest_due_seconds"]),
    )
