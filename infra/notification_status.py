"""What operators see of notifications and email, read from the database at
scrape time (the same answer from every API process). Rows are never
deleted, so counts of rows are totals since the start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg.rows import class_row

__all__ = ["NotificationStatus", "notification_status"]

SELECT_NOTIFICATION_STATUS: Final = """
SELECT
    (SELECT count(*) FROM notifications) AS notifications_created,
    (SELECT count(*) FROM email_outbox WHERE status = 'sent') AS emails_sent,
    (SELECT count(*) FROM email_outbox WHERE status = 'failed') AS emails_failed,
    (SELECT count(*) FROM email_outbox WHERE status = 'pending') AS emails_pending,
    (SELECT count(*) FROM email_attempts WHERE outcome = 'failed') AS email_attempts_failed,
    (SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8
        FROM email_outbox
        WHERE status = 'pending' AND next_attempt_at <= now()) AS email_oldest_due_seconds
"""


@dataclass(frozen=True, slots=True)
class NotificationStatus:
    notifications_created: int
    emails_sent: int
    emails_failed: int
    emails_pending: int
    email_attempts_failed: int
    email_oldest_due_seconds: float


def notification_status(conn: psycopg.Connection[Any]) -> NotificationStatus:
    with conn.cursor(row_factory=class_row(NotificationStatus)) as cur:
        found = cur.execute(SELECT_NOTIFICATION_STATUS).fetchone()
    assert found is not None
    return found
