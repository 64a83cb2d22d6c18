"""The webhook consumer: turns each published event into one delivery per
matching endpoint (a durable JetStream pull consumer, declared by faststream).

A message is acknowledged only after its deliveries are committed, and the
insert is idempotent per (endpoint, event), so a redelivered message records
nothing twice. Endpoints are matched as the webhooks read model has them; a
message that arrives before that model has caught up with it waits (nack with
a delay), so an endpoint registered just before an event never misses it.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
import structlog
from faststream import AckPolicy
from faststream.nats import NatsBroker, NatsMessage, PullSub
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from infra import deliveries
from infra.event_stream import VISIBLE_TO_HEADER, all_events_subject, events_stream
from infra.settings import Settings

__all__ = ["CONSUMER", "subscribe_webhook_fanout"]

log = structlog.get_logger(__name__)

CONSUMER: Final = "webhooks"
# How long a message waits for the webhooks read model before it is offered again.
NOT_READY_DELAY: Final = 0.2
RETRY_DELAY: Final = 1.0
# A pull returns as soon as messages arrive; this only bounds an idle wait.
# Short waits trip a timeout nats-py raises that faststream does not expect
# (its supervisor then logs the error and restarts the pull loop).
PULL_TIMEOUT: Final = 5.0


def subscribe_webhook_fanout(
    broker: NatsBroker, settings: Settings, pool: AsyncConnectionPool[AsyncConnection[Any]]
) -> None:
    first_delay = settings.webhook_retry_schedule[0]

    @broker.subscriber(
        all_events_subject(settings),
        stream=events_stream(settings),
        durable=CONSUMER,
        pull_sub=PullSub(batch_size=64, timeout=PULL_TIMEOUT),
        ack_policy=AckPolicy.MANUAL,
    )
    async def fan_out(message: NatsMessage) -> None:
        headers = message.headers
        if VISIBLE_TO_HEADER in headers:
            # A private entry is its author's alone: never sent to a team's endpoints.
            await message.ack()
            return
        body = message.body
        doc = orjson.loads(body)
        try:
            async with pool.connection() as conn:
                ready = await deliveries.webhooks_position(conn)
                if ready is None or ready < doc["position"]:
                    await message.nack(delay=NOT_READY_DELAY)
                    return
                await deliveries.record_deliveries(
                    conn, doc, body.decode(), first_delay=first_delay
                )
        except Exception as exc:  # noqa: BLE001 - the database is down: offer it again later
            log.warning("webhook fan-out failed; will retry", event=doc["id"], error=str(exc))
            await message.nack(delay=RETRY_DELAY)
            return
        await message.ack()
