"""The batched consumer's answers: each message is acknowledged only once what
it produced is recorded, offered again after a delay when a read model is
behind or the transaction failed, rejected when the relay did not write it,
and offered again at once when the worker stops with it still queued."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
from faststream.nats import NatsMessage
from psycopg import AsyncConnection

from infra.batched_consumer import NOT_READY_DELAY, RETRY_DELAY, BatchedConsumer, Pool
from infra.event_stream import VISIBLE_TO_HEADER
from infra.settings import Settings


@dataclass
class FakeMessage:
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    answers: list[tuple[str, float | None]] = field(default_factory=list)
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def raw_message(self) -> Any:
        return type("Raw", (), {"subject": "test.events"})()

    async def ack(self) -> None:
        self.answers.append(("ack", None))
        self.answered.set()

    async def nack(self, delay: float | None = None) -> None:
        self.answers.append(("nack", delay))
        self.answered.set()

    async def reject(self) -> None:
        self.answers.append(("reject", None))
        self.answered.set()


class FakePool:
    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[None]:
        yield None


class Positions(BatchedConsumer[int]):
    """Records positions up to ``ready``; fails the transaction when told to."""

    consumer = "test"

    def __init__(self, ready: int, *, fail: bool = False) -> None:
        super().__init__(Settings(), cast(Pool, FakePool()))
        self.ready, self.fail = ready, fail
        self.batches: list[list[int]] = []

    def parse(self, body: bytes) -> int | None:
        doc = orjson.loads(body)
        return doc.get("position") if isinstance(doc, dict) else None

    async def record(self, conn: AsyncConnection[Any], items: Sequence[int]) -> list[bool]:
        if self.fail:
            raise OSError("the database went away")
        self.batches.append(list(items))
        return [position <= self.ready for position in items]


def message(position: int | None, **headers: str) -> FakeMessage:
    body = orjson.dumps({"position": position} if position is not None else ["not", "ours"])
    return FakeMessage(body, headers)


async def consume(consumer: Positions, messages: list[FakeMessage]) -> None:
    """Hands ``messages`` over as the broker does, then runs the recorder until
    every taken message has an answer."""
    stopping = asyncio.Event()
    recorder = asyncio.create_task(consumer.run(stopping))
    for each in messages:
        await consumer._take(cast(NatsMessage, each))
    async with asyncio.timeout(5):
        for each in messages:
            await each.answered.wait()
    stopping.set()
    await recorder


def test_messages_taken_together_are_recorded_in_one_batch_and_then_answered() -> None:
    consumer = Positions(ready=2)
    messages = [message(1), message(2), message(3)]
    asyncio.run(consume(consumer, messages))
    assert consumer.batches == [[1, 2, 3]]
    assert [m.answers for m in messages] == [
        [("ack", None)],
        [("ack", None)],
        [("nack", NOT_READY_DELAY)],  # its read model is behind: offered again later
    ]


def test_a_failed_transaction_offers_every_message_of_the_batch_again() -> None:
    messages = [message(1), message(2)]
    asyncio.run(consume(Positions(ready=10, fail=True), messages))
    assert [m.answers for m in messages] == [[("nack", RETRY_DELAY)]] * 2


def test_malformed_and_private_messages_are_answered_without_recording() -> None:
    consumer = Positions(ready=10)
    malformed, private = message(None), message(5, **{VISIBLE_TO_HEADER: "someone"})
    asyncio.run(consume(consumer, [malformed, private]))
    assert consumer.batches == []
    assert malformed.answers == [("reject", None)]
    assert private.answers == [("ack", None)]


def test_messages_still_queued_at_stop_are_offered_again_at_once() -> None:
    async def stop_with_one_queued() -> FakeMessage:
        consumer = Positions(ready=10)
        stopping = asyncio.Event()
        stopping.set()
        queued = message(1)
        await consumer._take(cast(NatsMessage, queued))
        await consumer.run(stopping)
        assert consumer.batches == []
        return queued

    assert asyncio.run(stop_with_one_queued()).answers == [("nack", 0.0)]
