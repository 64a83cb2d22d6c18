"""The notification consumer: turns each published event into notifications
for the members the rules name, with their immediate emails (a batched
durable consumer: ``infra.batched_consumer``).

The insert is idempotent per (event, member). A message that arrives before
the teams or preferences read model has caught up with a change before it
waits (nack with a delay), so a member added just before an event, or a
preference changed just before, is taken into account; so does one whose
notice names an entry or an endpoint that its read model has not reached.

Events that were in the log before notifications existed (migration 0007's
``notification_start``) are acknowledged without notifying anyone.

A private entry's events (``Chronik-Visible-To``) notify nobody: the only
member who may see them is their author, who needs no notice of their own
entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final
from uuid import UUID

import orjson
import structlog
from psycopg import AsyncConnection

from infra import notifications
from infra.batched_consumer import BatchedConsumer, Pool
from infra.settings import Settings

__all__ = ["CONSUMER", "NotificationConsumer", "parse_document"]

log = structlog.get_logger(__name__)

CONSUMER: Final = "notifications"
# Where notifying starts (migration 0007): older events were in the log before
# notifications existed, and a new durable consumer would replay them all.
SELECT_START: Final = "SELECT position FROM notification_start"
REQUIRED: Final = frozenset({"id", "type", "position", "team_id", "data"})
Doc = dict[str, Any]


def parse_document(body: bytes) -> Doc | None:
    """The relay's public document in ``body``; None if it is not one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not doc.keys() >= REQUIRED:
        return None
    if not (
        isinstance(doc["position"], int)
        and isinstance(doc["type"], str)
        and isinstance(doc["id"], str)
        and isinstance(doc["data"], dict)
    ):
        return None
    try:
        UUID(str(doc["team_id"]))
        if doc.get("aggregate_id") is not None:
            UUID(str(doc["aggregate_id"]))
    except ValueError:
        return None
    return doc


class NotificationConsumer(BatchedConsumer[Doc]):
    consumer = CONSUMER

    def __init__(self, settings: Settings, pool: Pool) -> None:
        super().__init__(settings, pool)
        self._start: int | None = None

    def parse(self, body: bytes) -> Doc | None:
        return parse_document(body)

    async def record(self, conn: AsyncConnection[Any], items: Sequence[Doc]) -> list[bool]:
        start = await self._start_position(conn)
        newest = max(doc["position"] for doc in items)
        upto = await notifications.ready_up_to(conn, newest)
        ready = [doc for doc in items if upto is not None and start < doc["position"] <= upto]
        if ready:
            recorded = await notifications.record_notifications(conn, ready)
            if recorded.notifications:
                log.debug(
                    "notifications recorded",
                    notifications=recorded.notifications,
                    emails=recorded.emails,
                )
        return [
            doc["position"] <= start or (upto is not None and doc["position"] <= upto)
            for doc in items
        ]

    async def _start_position(self, conn: AsyncConnection[Any]) -> int:
        if self._start is None:
            row = await (await conn.execute(SELECT_START)).fetchone()
            self._start = int(row[0]) if row else 0
        return self._start
