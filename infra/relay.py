"""The relay: publishes the event feed to JetStream, in position order.

It reads the event feed projection's public documents (the public form and
each event's visibility are computed there, once) after its tracked position,
publishes a batch pipelined, waits for every acknowledgement, and only then
advances its position, so a crash republishes at most one batch; JetStream
drops those repeats by ``Nats-Msg-Id`` (the event id). Messages leave one
connection in position order, so the stream holds them in that order.

If NATS is down, commands are unaffected: the relay records the error, falls
behind (its lag is in ``/metrics`` and ``/readyz``) and catches up once NATS
answers again. One relay is active across all processes (a session advisory
lock); the others stand by.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import psycopg
import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from opentelemetry.trace import Span, SpanKind, StatusCode
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from infra import tracing
from infra.event_stream import (
    POSITION_HEADER,
    TEAM_HEADER,
    TYPE_HEADER,
    VISIBLE_TO_HEADER,
    declare_events_stream,
    event_subject,
)
from infra.messaging import close_nats, connect_nats, stream_name
from infra.settings import Settings
from infra.tracing import CORRELATION_HEADER, TRACEPARENT
from infra.waiting import first_of
from projections.registry import PROGRESS_CHANNEL

__all__ = ["RELAY_NAME", "OutMessage", "Relay", "relay_status"]

log = structlog.get_logger(__name__)

RELAY_NAME: Final = "events"
LOCK: Final = (0x726C, 1)  # advisory lock (class, id) of the active relay
FEED: Final = "event_feed"
ENVELOPE: Final = (
    "id", "type", "position", "team_id", "aggregate_id", "aggregate_version", "occurred_at",
    "actor", "data",
)  # fmt: skip

ENSURE_POSITION: Final = (
    "INSERT INTO relay_positions (name) VALUES (%(name)s) ON CONFLICT (name) DO NOTHING"
)
LOAD_POSITION: Final = "SELECT position FROM relay_positions WHERE name = %(name)s"
# The feed's own position covers events that are not public: once every row
# up to it is published, the relay is as far along as the feed.
FEED_POSITION: Final = (
    "SELECT position FROM projection_generations WHERE projection = %(feed)s AND state = 'active'"
)
SELECT_BATCH: Final = """
SELECT position, team_id, type, visible_to, doc,
    metadata ->> 'correlation_id' AS correlation_id, metadata ->> 'traceparent' AS traceparent
FROM reads.public_events
WHERE position > %(after)s ORDER BY position LIMIT %(limit)s
"""
# A feed generation of version 1 (still serving while version 2 is built) has
# no metadata column: its events go out without correlation id and trace.
SELECT_BATCH_V1: Final = """
SELECT position, team_id, type, visible_to, doc FROM reads.public_events
WHERE position > %(after)s ORDER BY position LIMIT %(limit)s
"""
ADVANCE: Final = """
UPDATE relay_positions SET position = %(new)s, published = published + %(count)s,
    last_error = NULL, updated_at = now()
WHERE name = %(name)s AND position = %(old)s
"""
RECORD_ERROR: Final = """
UPDATE relay_positions SET last_error = %(error)s, last_error_at = now(), updated_at = now()
WHERE name = %(name)s
"""
SELECT_RELAY: Final = """
SELECT position, published, last_error, last_error_at FROM relay_positions WHERE name = %(name)s
"""


class LostPosition(Exception):
    """The tracked position moved under us: another relay is active."""


@dataclass(frozen=True, slots=True)
class OutMessage:
    subject: str
    body: bytes
    headers: dict[str, str]


def messages_of(settings: Settings, rows: Sequence[dict[str, Any]]) -> list[OutMessage]:
    out = []
    for row in rows:
        # jsonb keeps keys in its own order; publish them in the catalog's.
        doc = {key: row["doc"][key] for key in ENVELOPE}
        headers = {
            "Nats-Msg-Id": doc["id"],
            POSITION_HEADER: str(row["position"]),
            TEAM_HEADER: str(row["team_id"]),
            TYPE_HEADER: row["type"],
        }
        if row["visible_to"] is not None:
            headers[VISIBLE_TO_HEADER] = str(row["visible_to"])
        if row.get("correlation_id"):
            headers[CORRELATION_HEADER] = row["correlation_id"]
        if row.get("traceparent"):
            # The append's context; a traced relay replaces it with its publish span's.
            headers[TRACEPARENT] = row["traceparent"]
        out.append(
            OutMessage(
                event_subject(settings, row["team_id"], row["type"]), orjson.dumps(doc), headers
            )
        )
    return out


class JetStreamPublisher:
    """Pipelined publishes on one connection, made (and the stream declared)
    on first use and again after the connection is lost for good.

    One JetStream context per connection, kept with it: a context's first
    ``publish_async`` subscribes the connection to an acknowledgement inbox of
    its own (a subscription and an asyncio task in nats-py) that is never
    removed: a context made for each batch left one of each behind per batch
    (the fan-out grew ~7 KB a batch, ~80 MB in a 10-minute soak)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stream = stream_name(settings, "events")
        self._client: NatsClient | None = None
        self._js: JetStreamContext | None = None

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        """Returns once JetStream acknowledged every message; raises otherwise."""
        js = await self._connected()
        timeout = self._settings.relay_ack_timeout
        acks: list[asyncio.Future[Any]] = []
        try:
            for message in messages:
                acks.append(
                    await js.publish_async(
                        message.subject,
                        message.body,
                        headers=dict(message.headers),
                        stream=self._stream,
                        wait_stall=timeout,
                    )
                )
            await asyncio.wait_for(asyncio.gather(*acks), timeout)
        finally:
            # Unanswered publishes hold slots in the client: give them back.
            for ack in acks:
                ack.cancel()

    async def _connected(self) -> JetStreamContext:
        if self._client is not None and self._client.is_closed:
            self._client = self._js = None
        if self._client is None or self._js is None:
            client = await connect_nats(self._settings, name="chronik-relay")
            js = client.jetstream()
            try:
                await declare_events_stream(js, self._settings)
            except BaseException:
                await client.close()
                raise
            self._client, self._js = client, js
        return self._js

    async def close(self) -> None:
        if self._client is not None:
            await close_nats(self._client)
            self._client = self._js = None


class Relay:
    def __init__(self, settings: Settings, conninfo: str, *, standby_interval: float = 1.0):
        self._settings = settings
        self._conninfo = conninfo
        self._publisher = JetStreamPublisher(settings)
        self._standby_interval = standby_interval
        self.active = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        delay = 0.5
        try:
            while not stopping.is_set():
                try:
                    conn = await AsyncConnection.connect(
                        self._conninfo, autocommit=True, application_name="chronik-relay"
                    )
                    async with conn:
                        if await self._stand_by_until_locked(conn, stopping):
                            await self._relay(conn, stopping)
                    delay = 0.5
                except (psycopg.OperationalError, psycopg.InterfaceError, LostPosition) as exc:
                    log.warning("relay lost the database", error=str(exc))
                    await first_of(stopping, within=delay)
                    delay = min(delay * 2, 5.0)
                finally:
                    self.active.clear()
        finally:
            await self._publisher.close()

    async def _stand_by_until_locked(
        self, conn: AsyncConnection[Any], stopping: asyncio.Event
    ) -> bool:
        while not stopping.is_set():
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", LOCK)
            row = await cur.fetchone()
            if row is not None and row[0]:
                self.active.set()
                log.info("relay is active")
                return True
            await first_of(stopping, within=self._standby_interval)
        return False

    async def _relay(self, conn: AsyncConnection[Any], stopping: asyncio.Event) -> None:
        name = {"name": RELAY_NAME}
        await conn.execute(ENSURE_POSITION, name)
        await conn.execute(f"LISTEN {PROGRESS_CHANNEL}")
        position = await _scalar(conn, LOAD_POSITION, name) or 0
        failures = 0
        while not stopping.is_set():
            feed_position = await _scalar(conn, FEED_POSITION, {"feed": FEED})
            if feed_position is None:  # the feed is not built yet
                await self._wait_for_progress(conn, stopping)
                continue
            rows = await _rows(conn, position, self._settings.relay_batch_size)
            if rows:
                try:
                    await self._publish(messages_of(self._settings, rows))
                except Exception as exc:  # noqa: BLE001 - NATS down or slow: retry the batch
                    failures += 1
                    await self._record_error(conn, exc, failures)
                    await first_of(stopping, within=min(0.5 * 2 ** min(failures, 4), 5.0))
                    continue
                failures = 0
            upto = rows[-1]["position"] if rows else position
            if len(rows) < self._settings.relay_batch_size:
                upto = max(upto, feed_position)
            if upto != position:
                await self._advance(conn, position, upto, len(rows))
                position = upto
            if len(rows) < self._settings.relay_batch_size:
                await self._wait_for_progress(conn, stopping)

    async def _publish(self, messages: list[OutMessage]) -> None:
        """Publishes with a producer span per traced message (tracing on)."""
        spans = _publish_spans(messages) if tracing.enabled() else []
        try:
            await self._publisher.publish(messages)
        except BaseException as exc:
            for span in spans:
                span.record_exception(exc)
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                span.end()
            raise
        for span in spans:
            span.end()

    async def _advance(self, conn: AsyncConnection[Any], old: int, new: int, count: int) -> None:
        cur = await conn.execute(
            ADVANCE, {"name": RELAY_NAME, "old": old, "new": new, "count": count}
        )
        if cur.rowcount != 1:
            raise LostPosition(f"relay position is no longer {old}")

    async def _record_error(
        self, conn: AsyncConnection[Any], exc: Exception, failures: int
    ) -> None:
        if isinstance(exc, TimeoutError):
            error = (
                f"no acknowledgement from JetStream within {self._settings.relay_ack_timeout:g} s"
            )
        else:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        error = error[:500]
        if failures == 1 or failures % 30 == 0:
            log.warning("relay cannot publish; will retry", error=error, failures=failures)
        await conn.execute(RECORD_ERROR, {"name": RELAY_NAME, "error": error})

    async def _wait_for_progress(self, conn: AsyncConnection[Any], stopping: asyncio.Event) -> None:
        """Until a projection reports progress, the poll interval passes or we stop."""
        timeout = self._settings.projection_poll_interval
        stop = asyncio.ensure_future(stopping.wait())
        notified = asyncio.ensure_future(_next_notify(conn, timeout))
        try:
            await asyncio.wait({stop, notified}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            notified.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await notified


async def _next_notify(conn: AsyncConnection[Any], seconds: float) -> None:
    """Until a notification comes (or ``seconds`` pass), taking every one
    psycopg kept while the connection ran the relay's queries: they all say
    the same. Taking one a wait left the rest queued: under load the
    projections notify more often than the relay waits, so the queue grew
    while the load lasted (925 at one moment of a soak) and no wait waited."""
    async for _ in conn.notifies(timeout=seconds, stop_after=1):
        pass  # the notifications kept come first, all of them; then it stops


async def _scalar(conn: AsyncConnection[Any], query: str, params: dict[str, Any]) -> Any:
    try:
        cur = await conn.execute(query, params)
    except psycopg.errors.UndefinedTable:
        return None
    row = await cur.fetchone()
    return None if row is None else row[0]


async def _rows(conn: AsyncConnection[Any], after: int, limit: int) -> list[dict[str, Any]]:
    params = {"after": after, "limit": limit}
    async with conn.cursor(row_factory=dict_row) as cur:
        try:
            await cur.execute(SELECT_BATCH, params)
        except psycopg.errors.UndefinedColumn:
            await cur.execute(SELECT_BATCH_V1, params)
        return await cur.fetchall()


def _publish_spans(messages: Sequence[OutMessage]) -> list[Span]:
    """A producer span for each message whose event was traced, as a child of
    the append's span; the message then carries the producer span's context."""
    spans = []
    for message in messages:
        parent = tracing.context_of(message.headers.get(TRACEPARENT))
        if parent is None:
            continue
        span = tracing.tracer().start_span(
            f"publish {message.headers[TYPE_HEADER]}",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": message.subject,
                "messaging.message.id": message.headers["Nats-Msg-Id"],
                "chronik.position": int(message.headers[POSITION_HEADER]),
            },
        )
        tracing.inject(message.headers, span)
        spans.append(span)
    return spans


def relay_status(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
    """The relay's position, events published and last error (None: never ran)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(SELECT_RELAY, {"name": RELAY_NAME})
        return cur.fetchone()
