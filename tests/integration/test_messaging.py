"""Real NATS with JetStream, under this test's own stream and subject names."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.js.api import StreamConfig

from infra.devstack.nats import EmbeddedNats
from infra.messaging import close_nats, connect_nats, stream_name
from infra.settings import Settings
from tests.waiting import eventually


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


@pytest.mark.anyio
async def test_a_client_is_closed_even_while_nats_is_away(
    settings: Settings, tmp_path: Path
) -> None:
    """drain refuses while the client reconnects; a client left open keeps
    tasks pending on a loop about to close (the API's shutdown failed so)."""
    server = EmbeddedNats(tmp_path)
    server.start()
    try:
        client = await connect_nats(settings.model_copy(update={"nats_url": server.url}), name="t")
    finally:
        server.stop()
    await eventually(lambda: client.is_reconnecting, what="the client reconnecting", within=10)
    await client.publish("anything", b"buffered while reconnecting")
    await close_nats(client)
    assert client.is_closed
