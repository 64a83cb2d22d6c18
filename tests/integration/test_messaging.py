"""Real NATS with JetStream, under this test's own stream and subject names."""

from __future__ import annotations

import pytest
from nats.js.api import StreamConfig

from infra.messaging import connect_nats, stream_name
from infra.settings import Settings


@pytest.mark.anyio
async def test_jetstream_publishes_and_deduplicates_by_message_id(settings: Settings) -> None:
    client = await connect_nats(settings, name="test")
    js = client.jetstream()
    name = stream_name(settings, "events")
    subject = f"{settings.nats_namespace}.events"
    try:
        await js.add_stream(StreamConfig(name=name, subjects=[f"{subject}.>"]))
        first = await js.publish(f"{subject}.a", b"one", headers={"Nats-Msg-Id": "p1"})
        again = await js.publish(f"{subject}.a", b"one", headers={"Nats-Msg-Id": "p1"})
        assert again.duplicate
        assert again.seq == first.seq
        sub = await js.pull_subscribe(f"{subject}.>", durable=f"{name}_reader", stream=name)
        (message,) = await sub.fetch(1, timeout=5)
        assert message.data == b"one"
        assert name.startswith(settings.nats_namespace.upper())
    finally:
        await js.delete_stream(name)
        await client.close()
