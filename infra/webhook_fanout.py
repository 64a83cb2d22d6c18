"""The webhook consumer: turns each published event into one delivery per
matching endpoint (a batched durable consumer: ``infra.batched_consumer``).

The insert is idempotent per (endpoint, event). Endpoints are matched as the
webhooks read model has them; a message that arrives before that model has
caught up with an endpoint change before it waits (nack with a delay), so an
endpoint registered just before an event never misses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import orjson
from psycopg import AsyncConnection

from infra import deliveries
from infra.batched_consumer import BatchedConsumer

__all__ = ["CONSUMER", "WebhookFanout"]

CONSUMER: Final = "webhooks"
REQUIRED: Final = frozenset({"id", "type", "position", "team_id"})

# The relay's document and its body as published (what the endpoint receives).
Event = tuple[dict[str, Any], str]


class WebhookFanout(BatchedConsumer[Event]):
    consumer = CONSUMER
    span_name = "webhooks receive"

    def parse(self, body: bytes) -> Event | None:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(doc, dict) or not doc.keys() >= REQUIRED:
            return None
        if not isinstance(doc["position"], int):  # a batch is matched up to its newest
            return None
        return doc, body.decode()

    async def record(self, conn: AsyncConnection[Any], items: Sequence[Event]) -> list[bool]:
        newest = max(doc["position"] for doc, _ in items)
        upto = await deliveries.matched_up_to(conn, newest)
        if upto is None:
            return [False] * len(items)
        ready = [item for item in items if item[0]["position"] <= upto]
        if ready:
            await deliveries.record_deliveries(
                conn, ready, first_delay=self._settings.webhook_retry_schedule[0]
            )
        return [doc["position"] <= upto for doc, _ in items]
