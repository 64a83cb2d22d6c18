"""Daily email digests: a scheduler job (``name`` and ``tick(now)``).

Once a day's digest time (``digest_hour`` UTC on the scheduler's clock) has
passed, every member (of ``reads.team_members``) with notifications stored
for the digest and not yet digested gets ONE email listing them: an
``email_outbox`` row with ``digest_day`` set to that day.

Which notifications go into a digest was decided when each was stored: the
member's preference for its kind then, which the consumer writes into the
row (``data._delivery.email`` is ``'digest'``; see ``infra.notifications``).
Never the preferences as they are now: a member who switches a kind from
immediate email to digest does not get the notifications already emailed
again, and one who switches digest off still gets, once, those stored for
the digest before (as an immediate email already queued is still sent).

The UNIQUE (team_id, user_id, digest_day) makes a digest exactly once across
any number of processes and restarts (``ON CONFLICT DO NOTHING``); the email
sender then sends it like any other.

What a digest covers is decided by the database's clock, never by the
scheduler's: a digest covers the notifications created from the end of the
member's previous digest up to ``settle`` seconds before it is written (its
``created_at``, the inserting transaction's now()); the next digest starts
where it ended, so each notification is in exactly one digest. ``settle``
leaves time for a notification whose transaction started earlier to commit.
A member's first digest looks back one day.

Timing: a day's digest is written on the job's first tick at or after the
digest time, up to ``grace`` after it. A day missed entirely (the job did not
run within the grace) is skipped: the next day's digest covers everything
since the previous one, so nothing is lost, and no stale digest is sent
after a long outage. A member with nothing new at the digest time gets no
email that day. Each process looks once per day (and once after it starts);
a process that starts later that day, within the grace, may still write a
digest for a member who had nothing new at the digest time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from uuid import UUID

import psycopg
import structlog
from psycopg.rows import dict_row

from infra import email_outbox
from infra.settings import Settings

__all__ = ["DigestItem", "DigestJob", "compose_digest", "digest_day_due"]

log = structlog.get_logger(__name__)

Connect = Callable[[], psycopg.Connection[Any]]

MAX_ITEMS: Final = 50
# Members with no digest for the day yet and something new stored for the
# digest (``data._delivery.email``: the member's preference for its kind when
# it was stored, see infra.notifications.DELIVERY_KEY). "New": created from
# where the member's previous digest ended (its created_at less the settle
# time; a first digest looks back one day) to the settle time before now.
SELECT_CANDIDATES: Final = """
SELECT m.team_id, m.user_id, m.email, m.display_name
FROM reads.team_members m
WHERE NOT EXISTS (
    SELECT 1 FROM email_outbox o
    WHERE o.team_id = m.team_id AND o.user_id = m.user_id AND o.digest_day = %(day)s
) AND EXISTS (
    SELECT 1 FROM notifications n
    WHERE n.team_id = m.team_id AND n.user_id = m.user_id
        AND n.data -> '_delivery' ->> 'email' = 'digest'
        AND n.created_at >= coalesce(
            (SELECT max(o.created_at) FROM email_outbox o
             WHERE o.team_id = m.team_id AND o.user_id = m.user_id
                 AND o.digest_day IS NOT NULL AND o.digest_day < %(day)s),
            now() - interval '1 day'
        ) - make_interval(secs => %(settle)s)
        AND n.created_at < now() - make_interval(secs => %(settle)s)
)
ORDER BY m.team_id, m.user_id
"""
# One member's notifications for the digest, in the same transaction (and so
# with the same now()) as the insert: the window ends where the row says.
SELECT_ITEMS: Final = """
SELECT n.kind, n.title, n.body, n.created_at, count(*) OVER () AS total
FROM (SELECT %(team_id)s::uuid AS team_id, %(user_id)s::uuid AS user_id) m
JOIN notifications n ON n.team_id = m.team_id AND n.user_id = m.user_id
WHERE n.data -> '_delivery' ->> 'email' = 'digest'
    AND n.created_at >= coalesce(
        (SELECT max(o.created_at) FROM email_outbox o
         WHERE o.team_id = m.team_id AND o.user_id = m.user_id
             AND o.digest_day IS NOT NULL AND o.digest_day < %(day)s),
        now() - interval '1 day'
    ) - make_interval(secs => %(settle)s)
    AND n.created_at < now() - make_interval(secs => %(settle)s)
ORDER BY n.created_at, n.id
LIMIT %(limit)s
"""


@dataclass(frozen=True, slots=True)
class DigestItem:
    kind: str
    title: str
    body: str
    created_at: datetime


def digest_day_due(now: datetime, hour: int, grace: timedelta) -> date | None:
    """The day whose digest is due at ``now`` (UTC): today once ``hour`` has
    passed, yesterday before; None when that day's digest time is more than
    ``grace`` ago (the day is skipped)."""
    now = now.astimezone(UTC)
    day = now.date() if now.time() >= time(hour) else now.date() - timedelta(days=1)
    due_at = datetime.combine(day, time(hour), tzinfo=UTC)
    return day if now - due_at <= grace else None


def compose_digest(
    day: date, display_name: str, items: Sequence[DigestItem], total: int
) -> tuple[str, str]:
    """Subject and plain-text body of a digest listing ``items`` (``total``
    were new; the list is capped)."""
    subject = f"Your Chronik digest for {day.isoformat()}: {total} new notification" + (
        "" if total == 1 else "s"
    )
    lines = [f"Hello {display_name},", "", f"Since your last digest ({total} new):", ""]
    for item in items:
        lines.append(f"- [{item.created_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC] {item.title}")
        lines.extend(f"    {line}" for line in item.body.splitlines() if line.strip())
    if total > len(items):
        lines.extend(["", f"... and {total - len(items)} more in your inbox."])
    lines.extend(["", "You get this daily digest because you turned it on for these kinds."])
    return subject, "\n".join(lines) + "\n"


class DigestJob:
    """Writes the daily digests; ``tick`` is called every few seconds with the
    scheduler's clock (safe to run in several processes at once)."""

    name = "email-digests"

    def __init__(
        self,
        settings: Settings,
        connect: Connect,
        *,
        settle: float = 30.0,
        grace: timedelta = timedelta(hours=6),
    ) -> None:
        """``connect``: a new autocommit connection (infra.projection_wiring.connector)."""
        self._hour = settings.digest_hour
        self._connect = connect
        self._settle = settle
        self._grace = grace
        self._done: date | None = None  # the last day this process wrote digests for

    def tick(self, now: datetime) -> None:
        day = digest_day_due(now, self._hour, self._grace)
        if day is None or day == self._done:
            return
        try:
            with self._connect() as conn:
                written = self.write_digests(conn, day)
        except psycopg.Error as exc:  # the next tick tries again
            log.warning("daily digests not written yet", day=day.isoformat(), error=str(exc))
            return
        self._done = day
        if written:
            log.info("daily digests queued", day=day.isoformat(), emails=written)

    def write_digests(self, conn: psycopg.Connection[Any], day: date) -> int:
        """The day's digests not yet written; how many this call wrote."""
        with conn.cursor(row_factory=dict_row) as cur:
            candidates = cur.execute(
                SELECT_CANDIDATES, {"day": day, "settle": self._settle}
            ).fetchall()
        return sum(self._write_one(conn, day, member) for member in candidates)

    def _write_one(self, conn: psycopg.Connection[Any], day: date, member: dict[str, Any]) -> int:
        team_id: UUID = member["team_id"]
        user_id: UUID = member["user_id"]
        params = {
            "day": day,
            "settle": self._settle,
            "team_id": team_id,
            "user_id": user_id,
            "limit": MAX_ITEMS,
        }
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(SELECT_ITEMS, params).fetchall()
            if not rows:
                return 0
            items = [DigestItem(r["kind"], r["title"], r["body"], r["created_at"]) for r in rows]
            subject, body = compose_digest(
                day, member["display_name"], items, int(rows[0]["total"])
            )
            cur.execute(
                email_outbox.INSERT_DIGEST,
                {
                    "team_id": team_id,
                    "user_id": user_id,
                    "day": day,
                    "to_address": member["email"],
                    "subject": subject,
                    "body": body,
                },
            )
            if cur.rowcount != 1:
                return 0  # another process wrote it first
            email_outbox.announce_sync(cur)
            return 1
