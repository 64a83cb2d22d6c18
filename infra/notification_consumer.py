"""The notification consumer: turns each published event into notifications
for the members the rules name (a durable JetStream consumer, declared by
faststream), with their immediate emails.

As the webhook consumer (``infra.webhook_fanout``): a durable push consumer
with a deliver group, so every worker process takes a share; a message is
acknowledged only after its notifications are committed; the insert is
idempotent per (event, member), so a redelivered message records nothing
twice; messages handled at the same moment are recorded in one transaction;
a message the relay did not write is rejected, not redelivered. A message
that arrives before the teams or preferences read model has caught up with a
change before it waits (nack with a delay), so a member added just before an
event, or a preference changed just before, is taken into account.

Events that were in the log before notifications existed (migration 0007's
``notification_start``) are acknowledged without notifying anyone.

A private entry's events (``Chronik-Visible-To``) notify nobody: the only
member who may see them is their author, who needs no notice of their own
entry.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final
from uuid import UUID

import orjson
import structlog
from faststream import AckPolicy
from faststream.nats import ConsumerConfig, NatsBroker, NatsMessage
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from infra import notifications
from infra.event_stream import VISIBLE_TO_HEADER, all_events_subject, events_stream
from infra.messaging import current_message
from infra.settings import Settings
from infra.waiting import first_of

__all__ = ["CONSUMER", "NotificationConsumer", "parse_document"]

log = structlog.get_logger(__name__)

CONSUMER: Final = "notifications"
# Where notifying starts (migration 0007): older events were in the log before
# notifications existed, and a new durable consumer would replay them all.
SELECT_START: Final = "SELECT position FROM notification_start"
NOT_READY_DELAY: Final = 0.2
RETRY_DELAY: Final = 1.0
REQUIRED: Final = frozenset({"id", "type", "position", "team_id", "data"})
HANDLERS: Final = 64
MAX_ACK_PENDING: Final = 1024

Doc = dict[str, Any]
Pool = AsyncConnectionPool[AsyncConnection[Any]]


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


class NotificationConsumer:
    def __init__(self, settings: Settings, pool: Pool) -> None:
        self._settings = settings
        self._pool = pool
        self._queued: list[tuple[Doc, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()
        self._start: int | None = None

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
        async def notify(_: object) -> None:  # the decoded body; the message has it too
            message = current_message(broker)
            await self.handle(message)

    async def handle(self, message: NatsMessage) -> None:
        """One message: recorded and acknowledged, put off, or rejected."""
        if VISIBLE_TO_HEADER in message.headers:
            # A private entry is its author's alone: nobody else hears of it.
            await message.ack()
            return
        doc = parse_document(message.body)
        if doc is None:
            # Not one of the relay's documents: offering it again cannot help.
            log.error(
                "notification consumer rejected a malformed message",
                subject=message.raw_message.subject,
            )
            await message.reject()
            return
        try:
            ready = await self.submit(doc)
        except Exception as exc:  # noqa: BLE001 - the database is down: offer it again later
            log.warning("notifications failed; will retry", error=str(exc))
            await message.nack(delay=RETRY_DELAY)
            return
        if ready:
            await message.ack()
        else:
            await message.nack(delay=NOT_READY_DELAY)

    async def submit(self, doc: Doc) -> bool:
        """Queues ``doc`` for the recorder; True once its notifications are
        committed, False if the read models are not ready for it yet."""
        recorded: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queued.append((doc, recorded))
        self._wake.set()
        return await recorded

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

    async def _record(self, batch: list[tuple[Doc, asyncio.Future[bool]]]) -> None:
        try:
            async with self._pool.connection() as conn:
                start = await self._start_position(conn)
                newest = max(doc["position"] for doc, _ in batch)
                upto = await notifications.ready_up_to(conn, newest)
                ready = [
                    doc for doc, _ in batch if upto is not None and start < doc["position"] <= upto
                ]
                if ready:
                    recorded = await notifications.record_notifications(conn, ready)
                    if recorded.notifications:
                        log.debug(
                            "notifications recorded",
                            notifications=recorded.notifications,
                            emails=recorded.emails,
                        )
        except Exception as exc:  # noqa: BLE001 - every handler of the batch hears it
            for _, future in batch:
                with contextlib.suppress(asyncio.InvalidStateError):
                    future.set_exception(exc)
            return
        for doc, future in batch:
            done = doc["position"] <= start or (upto is not None and doc["position"] <= upto)
            with contextlib.suppress(asyncio.InvalidStateError):
                future.set_result(done)

    async def _start_position(self, conn: AsyncConnection[Any]) -> int:
        if self._start is None:
            row = await (await conn.execute(SELECT_START)).fetchone()
            self._start = int(row[0]) if row else 0
        return self._start
