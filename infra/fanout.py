"""Fan-out: the relay on an asyncio loop in a thread of its own; the webhook
and notification consumers, the webhook delivery worker and the email sender
together on another.

The relay has a loop to itself because its throughput bounds everything
downstream and each message costs it several awaits: sharing the loop with
hundreds of delivery tasks, it waited behind all of them at each await and
published ~250 messages/s, so under bench B5 at 500 commands/s commit to
stream took 18.7 s at p50 (JetStream alone takes 500 pipelined publishes in
~60 ms). On its own loop: 0.14-0.45 s.

Each part survives PostgreSQL or NATS going away on its own: the relay
retries its batch, the consumer's broker is (re)started once NATS answers,
the delivery worker keeps sending what is already claimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final
from uuid import UUID

import structlog
from faststream.nats import NatsBroker
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from aggregates.errors import DomainError
from commands.webhook_health import disable_failing_webhook
from infra.db import PostgresTarget
from infra.delivery_worker import DeliveryWorker
from infra.email_sender import EmailSender
from infra.event_store import EventStore
from infra.loop_thread import LoopThread
from infra.messaging import connect_nats
from infra.notification_consumer import NotificationConsumer
from infra.relay import Relay
from infra.settings import Settings
from infra.waiting import first_of
from infra.webhook_fanout import WebhookFanout

__all__ = ["Fanout"]

log = structlog.get_logger(__name__)

CONSUMER_POOL_SIZE: Final = 3
DELIVERY_POOL_SIZE: Final = 8
EMAIL_POOL_SIZE: Final = 2


class Fanout:
    def __init__(
        self,
        settings: Settings,
        store: EventStore,
        *,
        relay: bool = True,
        consumers: bool = True,
        deliveries: bool = True,
        emails: bool = True,
    ) -> None:
        self._settings = settings
        self._store = store
        self._parts = {
            "relay": relay, "consumers": consumers, "deliveries": deliveries, "emails": emails,
        }  # fmt: skip
        self._conninfo = PostgresTarget.from_url(settings.database_url_value()).conninfo()
        self._threads = []
        if consumers or deliveries or emails:
            self._threads.append(LoopThread("fanout", self._main))
        if relay:
            conninfo = self._conninfo
            self._threads.append(
                LoopThread("relay", lambda stopping: Relay(settings, conninfo).run(stopping))
            )

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 20.0) -> None:
        for thread in self._threads:
            thread.request_stop()
        for thread in self._threads:
            thread.join(timeout)

    async def _main(self, stopping: asyncio.Event) -> None:
        # Two pools: the consumers' commits must not queue behind the
        # delivery worker's (hundreds of recorded attempts a second).
        consumer_pool = self._pool("chronik-consumers", CONSUMER_POOL_SIZE)
        delivery_pool = self._pool("chronik-deliveries", DELIVERY_POOL_SIZE)
        # Its own, so a slow SMTP server never holds the webhooks' connections.
        email_pool = self._pool("chronik-emails", EMAIL_POOL_SIZE)
        tasks = []
        if self._parts["consumers"]:
            await consumer_pool.open(wait=False)
            webhooks = WebhookFanout(self._settings, consumer_pool)
            notifications = NotificationConsumer(self._settings, consumer_pool)
            tasks += [
                webhooks.run(stopping),
                notifications.run(stopping),
                self._consume((webhooks, notifications), stopping),
            ]
        if self._parts["deliveries"]:
            await delivery_pool.open(wait=False)
            worker = DeliveryWorker(self._settings, delivery_pool, self._conninfo, self._disable)
            tasks.append(worker.run(stopping))
        if self._parts["emails"]:
            await email_pool.open(wait=False)
            tasks.append(EmailSender(self._settings, email_pool, self._conninfo).run(stopping))
        log.info("fan-out started", parts=[k for k, v in self._parts.items() if v])
        try:
            await asyncio.gather(*tasks)
        finally:
            await consumer_pool.close()
            await delivery_pool.close()
            await email_pool.close()
            log.info("fan-out stopped")

    def _pool(self, name: str, size: int) -> AsyncConnectionPool[AsyncConnection[Any]]:
        return AsyncConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=size,
            kwargs={"autocommit": True, "application_name": name},
            open=False,
        )

    async def _consume(
        self, consumers: tuple[WebhookFanout, NotificationConsumer], stopping: asyncio.Event
    ) -> None:
        """Runs the consumers' broker, started only once NATS answers: a
        broker connecting to a server that is down would retry inside its
        connect for ever and not hear that we are stopping."""
        delay = 0.5
        while not stopping.is_set():
            try:
                probe = await connect_nats(self._settings, name="chronik-consumers-probe")
                await probe.close()
            except Exception as exc:  # noqa: BLE001 - NATS down: try again
                log.warning("consumers wait for NATS", error=str(exc), retry_in=delay)
                await first_of(stopping, within=delay)
                delay = min(delay * 2, 10.0)
                continue
            broker = self._broker()
            for consumer in consumers:
                consumer.subscribe(broker)
            try:
                await broker.start()
                delay = 0.5
                await stopping.wait()
            except Exception as exc:  # noqa: BLE001 - e.g. NATS went away while starting
                log.warning("consumers stopped; restarting", error=str(exc))
                await first_of(stopping, within=delay)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(broker.stop(), 10)

    def _broker(self) -> NatsBroker:
        return NatsBroker(
            self._settings.nats_servers(),
            name="chronik-consumers",
            connect_timeout=5,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            graceful_timeout=10,
            # One access line per message is too much at INFO.
            log_level=logging.DEBUG,
            # No dependency injection: handlers take the message from the
            # context (infra.messaging.current_message), saving a thread-pool
            # trip per message.
            apply_types=False,
        )

    async def _disable(self, team_id: UUID, endpoint_id: UUID, reason: str) -> None:
        try:
            await asyncio.to_thread(
                disable_failing_webhook, self._store, team_id, endpoint_id, reason
            )
        except DomainError as exc:  # e.g. deleted meanwhile: nothing left to disable
            log.info("endpoint not disabled", endpoint=str(endpoint_id), error=str(exc))
