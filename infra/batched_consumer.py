"""A durable JetStream consumer of the events stream that records what it
takes in batches: the shape shared by the webhook and notification consumers.

faststream declares a durable push consumer with a deliver group, so every
worker process takes a share, at most MAX_ACK_PENDING unacknowledged at a
time. Its handler only parses a message and queues it: it never waits, so
nats-py hands over everything already received without giving the event
loop up between messages. One recorder writes whatever is queued in a single
transaction, then acknowledges each message (or offers it again later).

Why not a handler per message that waits for its commit (faststream's
``max_workers``): each message then cost the loop several turns before its
handler ran, and under bench B5 at 500 events/s, with the loop shared by the
delivery worker on a saturated machine, the consumer took ~100 messages/s
while a thousand sat in nats-py's queue (stream to delivery row p50 16 s).

A message is acknowledged only after what it produced is committed, and the
inserts are idempotent, so a redelivered message records nothing twice. A
message the relay did not write is rejected, not redelivered. A private
entry's events (``Chronik-Visible-To``) are acknowledged unrecorded: they
are their author's alone.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Generic, TypeVar

import structlog
from faststream import AckPolicy
from faststream.nats import ConsumerConfig, NatsBroker, NatsMessage
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from infra import tracing
from infra.event_stream import VISIBLE_TO_HEADER, all_events_subject, events_stream
from infra.messaging import current_message
from infra.settings import Settings
from infra.tracing import CORRELATION_HEADER
from infra.waiting import Batches

__all__ = ["BatchedConsumer", "Pool"]

log = structlog.get_logger(__name__)

MAX_ACK_PENDING: Final = 1024
ACK_WAIT: Final = 30
# How long a message waits for a read model before it is offered again.
NOT_READY_DELAY: Final = 0.2
# How long after a failed transaction (the database away) a message returns.
RETRY_DELAY: Final = 1.0

Item = TypeVar("Item")
Pool = AsyncConnectionPool[AsyncConnection[Any]]


@dataclass(slots=True)
class _Taken(Generic[Item]):
    message: NatsMessage
    item: Item
    span: Span | None


class BatchedConsumer(ABC, Generic[Item]):
    #: The durable consumer's name, which is also its deliver group.
    consumer: ClassVar[str]
    #: A consumer span per message, continuing the relay's publish (tracing on).
    span_name: ClassVar[str | None] = None

    def __init__(self, settings: Settings, pool: Pool) -> None:
        self._settings = settings
        self._pool = pool
        self._taken: Batches[_Taken[Item]] = Batches()

    @abstractmethod
    def parse(self, body: bytes) -> Item | None:
        """The message's body as this consumer records it; None if the relay
        did not write it."""

    @abstractmethod
    async def record(self, conn: AsyncConnection[Any], items: Sequence[Item]) -> list[bool]:
        """Records ``items`` in one transaction; for each, whether it is done
        (False: a read model has not caught up with it, offer it again)."""

    def subscribe(self, broker: NatsBroker) -> None:
        @broker.subscriber(
            all_events_subject(self._settings),
            stream=events_stream(self._settings),
            # The deliver group is also the durable consumer's name (nats-py).
            queue=self.consumer,
            config=ConsumerConfig(max_ack_pending=MAX_ACK_PENDING, ack_wait=ACK_WAIT),
            ack_policy=AckPolicy.MANUAL,
        )
        async def take(_: object) -> None:  # the decoded body; the message has it too
            await self._take(current_message(broker))

    async def _take(self, message: NatsMessage) -> None:
        if VISIBLE_TO_HEADER in message.headers:
            await message.ack()
            return
        item = self.parse(message.body)
        if item is None:
            # Not one of the relay's documents: offering it again cannot help.
            log.error(
                "consumer rejected a malformed message",
                consumer=self.consumer,
                subject=message.raw_message.subject,
                correlation_id=message.headers.get(CORRELATION_HEADER),
            )
            await message.reject()
            return
        self._taken.put(_Taken(message, item, self._start_span(message)))

    async def run(self, stopping: asyncio.Event) -> None:
        """Records what was taken, a batch per transaction, until stopped."""
        await self._taken.serve(self._settle, stopping)
        # Offered again at once, so another worker need not wait for ACK_WAIT.
        for taken in self._taken.take():
            await self._answer(taken, done=False, delay=0.0)

    async def _settle(self, batch: list[_Taken[Item]]) -> None:
        try:
            async with self._pool.connection() as conn:
                done = await self.record(conn, [taken.item for taken in batch])
        except Exception as exc:  # noqa: BLE001 - the database is down: offer them again later
            log.warning(
                "consumer failed to record; will retry",
                consumer=self.consumer,
                messages=len(batch),
                error=str(exc),
            )
            for taken in batch:
                if taken.span is not None:
                    taken.span.set_status(Status(StatusCode.ERROR, str(exc)))
                await self._answer(taken, done=False, delay=RETRY_DELAY)
            return
        for taken, ok in zip(batch, done, strict=True):
            await self._answer(taken, done=ok, delay=NOT_READY_DELAY)

    async def _answer(self, taken: _Taken[Item], *, done: bool, delay: float) -> None:
        try:
            if done:
                await taken.message.ack()
            else:
                await taken.message.nack(delay=delay)
        except Exception as exc:  # noqa: BLE001 - e.g. NATS reconnecting: it comes back after ACK_WAIT
            log.warning("consumer could not answer", consumer=self.consumer, error=str(exc))
        finally:
            if taken.span is not None:
                taken.span.end()

    def _start_span(self, message: NatsMessage) -> Span | None:
        if self.span_name is None or not tracing.enabled():
            return None
        headers = message.headers
        attributes = {
            "messaging.system": "nats",
            "messaging.destination.name": message.raw_message.subject,
            "messaging.message.id": headers.get("Nats-Msg-Id", ""),
        }
        if (correlation_id := headers.get(CORRELATION_HEADER)) is not None:
            attributes["chronik.correlation_id"] = correlation_id
        return tracing.tracer().start_span(
            self.span_name,
            context=tracing.context_of(headers),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
