"""What operators see of the fan-out: the relay's progress and the webhook
backlog, read from the database at scrape time (the same answer from every
API process)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from infra.relay import RELAY_NAME

__all__ = ["FanoutStatus", "fanout_status"]

SELECT_FANOUT_STATUS: Final = """
SELECT
    (SELECT coalesce(max(notification_id), 0) FROM chronik_events) AS head,
    r.position AS relay_position, r.published AS relay_published,
    r.last_error AS relay_error, r.last_error_at AS relay_error_at,
    (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending') AS pending,
    (SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8
        FROM webhook_deliveries
        WHERE status = 'pending' AND next_attempt_at <= now()) AS oldest_due_seconds,
    (SELECT count(*) FROM webhook_endpoint_health WHERE failing_since IS NOT NULL)
        AS endpoints_failing
FROM (SELECT 1) AS one
LEFT JOIN relay_positions r ON r.name = %(relay)s
"""


@dataclass(frozen=True, slots=True)
class FanoutStatus:
    head: int
    relay_position: int | None  # None: the relay never ran
    relay_published: int
    relay_error: str | None
    relay_error_at: Any
    pending: int
    oldest_due_seconds: float
    endpoints_failing: int

    @property
    def relay_lag(self) -> int:
        return self.head - (self.relay_position or 0)


def fanout_status(conn: psycopg.Connection[Any]) -> FanoutStatus:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(SELECT_FANOUT_STATUS, {"relay": RELAY_NAME})
        row = cur.fetchone()
    assert row is not None
    row["relay_published"] = row["relay_published"] or 0
    return FanoutStatus(**row)
