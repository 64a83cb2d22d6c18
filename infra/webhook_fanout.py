"""The webhook consumer: turns each published event into one delivery per
matching endpoint (a durable JetStream consumer, declared by faststream).

A message is acknowledged only after its deliveries are committed, and the
insert is idempotent per (endpoint, event), so a redelivered message records
nothing twice. Endpoints are matched as the webhooks read model has them; a
message that arrives before that model has caught up with it waits (nack with
a delay), so an endpoint registered just before an event never misses it.

faststream hands each message to its own handler, up to HANDLERS at once;
the handlers queue their events and one recorder writes whatever is queued in
a single transaction (one commit for many messages instead of one each).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

import orjson
import structlog
from faststream import AckPolicy
from faststream.nats import ConsumerConfig, NatsBroker, NatsMessage
from opentelemetry.trace import SpanKind
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from infra import deliveries, tracing
from infra.event_stream import VISIBLE_TO_HEADER, all_events_subject, events_stream
from infra.messaging import current_message
from infra.settings import Settings
from infra.tracing import CORRELATION_HEADER
from infra.waiting import first_of

__all__ = ["CONSUMER", "WebhookFanout"]

log = structlog.get_logger(__name__)

CONSUMER: Final = "webhooks"
# How long a message waits for the webhooks read model before it is offered again.
NOT_READY_DELAY: Final = 0.2
RETRY_DELAY: Final = 1.0
REQUIRED: Final = frozenset({"id", "type", "position", "team_id"})
# A durable push consumer with a deliver group: every worker process joins
# the group and JetStream spreads the messages over them, at most
# MAX_ACK_PENDING unacknowledged at a time. Measured against a durable pull
# consumer (nats-py's fetch of N keeps a pull open until N messages came, so
# at 200 events/s a batch of 128 held the first for about 640 ms): at 200
# events/s, stream to delivery row took p50 30 ms / p99 210 ms against
# p50 500-850 ms pulling (make bench, B5 latency).
HANDLERS: Final = 64
MAX_ACK_PENDING: Final = 1024

Event = tuple[dict[str, Any], str]
Pool = AsyncConnectionPool[AsyncConnection[Any]]


class WebhookFanout:
    def __init__(self, settings: Settings, pool: Pool) -> None:
        self._settings = settings
        self._pool = pool
        self._queued: list[tuple[Event, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()

    def subscribe(self, broker: NatsBroker) -> None:
        @broker.subscriber(
            all_events_subject(self._settings),
            stream=events_stream(self._settings),
            # The deliver group is also the durable consumer's name (nats-py).
            queue=CONSUMER,
            max_workers=HANDLERS,
            config=ConsumerConfig(max_ack_pending=MAX_ACK_PENDING, ack_wait=30),
            ack_policy=AckPolicy.MANUAL,
        )
        async def fan_out(_: object) -> None:  # the decoded body; the message has it too
            message = current_message(broker)
            await self._traced(message)

    async def _traced(self, message: NatsMessage) -> None:
        """``_fan_out`` in a consumer span that continues the relay's publish
        (tracing on), with the event's correlation id in the logs."""
        headers = message.headers
        correlation_id = headers.get(CORRELATION_HEADER)
        with structlog.contextvars.bound_contextvars(correlation_id=correlation_id):
            if not tracing.enabled():
                await self._fan_out(message)
                return
            attributes = {
                "messaging.system": "nats",
                "messaging.destination.name": message.raw_message.subject,
                "messaging.message.id": headers.get("Nats-Msg-Id", ""),
            }
            if correlation_id is not None:
                attributes["chronik.correlation_id"] = correlation_id
            with tracing.tracer().start_as_current_span(
                "webhooks receive",
                context=tracing.context_of(headers),
                kind=SpanKind.CONSUMER,
                attributes=attributes,
            ):
                await self._fan_out(message)

    async def _fan_out(self, message: NatsMessage) -> None:
        if VISIBLE_TO_HEADER in message.headers:
            # A private entry is its author's alone: never sent to a team's endpoints.
            await message.ack()
            return
        body = message.body
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or not doc.keys() >= REQUIRED:
            # Not one of the relay's documents: offering it again cannot help.
            log.error(
                "webhook fan-out rejected a malformed message",
                subject=message.raw_message.subject,
            )
            await message.reject()
            return
        recorded = asyncio.get_running_loop().create_future()
        self._queued.append(((doc, body.decode()), recorded))
        self._wake.set()
        try:
            ready = await recorded
        except Exception as exc:  # noqa: BLE001 - the database is down: offer it again later
            log.warning("webhook fan-out failed; will retry", error=str(exc))
            await message.nack(delay=RETRY_DELAY)
            return
        if ready:
            await message.ack()
        else:
            await message.nack(delay=NOT_READY_DELAY)

    async def run(self, stopping: asyncio.Event) -> None:
        """Records what the handlers queued, a batch per transaction, until stopped."""
        while not stopping.is_set():
            await first_of(self._wake, stopping)
            self._wake.clear()
            while self._queued:
                batch, self._queued = self._queued, []
                await self._record(batch)
        for _, recorded in self._queued:  # stopping: the messages will be redelivered
            recorded.cancel()

    async def _record(self, batch: list[tuple[Event, asyncio.Future[bool]]]) -> None:
        try:
            async with self._pool.connection() as conn:
                newest = max(event[0]["position"] for event, _ in batch)
                upto = await deliveries.matched_up_to(conn, newest)
                ready = [b for b in batch if upto is not None and b[0][0]["position"] <= upto]
                if ready:
                    await deliveries.record_deliveries(
                        conn,
                        [event for event, _ in ready],
                        first_delay=self._settings.webhook_retry_schedule[0],
                    )
        except Exception as exc:  # noqa: BLE001 - every handler of the batch hears it
            for _, recorded in batch:
                with contextlib.suppress(asyncio.InvalidStateError):
                    recorded.set_exception(exc)
            return
        for (doc, _), recorded in batch:
            with contextlib.suppress(asyncio.InvalidStateError):
                recorded.set_result(upto is not None and doc["position"] <= upto)
