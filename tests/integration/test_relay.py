"""The relay (infra.relay) against real PostgreSQL and real NATS JetStream:
what it publishes, that a republish adds nothing, that one relay is active at
a time, and that NATS going away stops nothing but the relay, which catches
up once NATS is back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest
from nats.js.api import StorageType, StreamInfo
from psycopg import AsyncConnection, Notify
from psycopg.rows import dict_row

from aggregates.base import Actor, Role
from aggregates.journal_entry import Visibility
from commands import entries, teams
from commands.context import CommandContext
from commands.models import AddMember, CreateEntry, EditEntry
from infra.devstack.nats import EmbeddedNats
from infra.devstack.processes import wait_until
from infra.event_store import EventStore
from infra.event_stream import event_subject
from infra.fanout import Fanout
from infra.messaging import connect_nats, stream_name
from infra.relay import (
    ENVELOPE,
    LOCK,
    JetStreamPublisher,
    OutMessage,
    _next_notify,
    relay_status,
)
from infra.settings import Settings
from projections.event_feed import EventFeedProjection, list_events
from projections.registry import PROGRESS_CHANNEL
from projections.runner import RunnerConfig
from tests.projection_support import (
    TeamFixture,
    connect,
    create_team,
    head,
    live_generation,
    running_fanout,
    running_worker,
    wait_caught_up,
    write_entry,
)
from tests.waiting import eventually

WORKER = RunnerConfig(batch_size=50, poll_interval=0.2, standby_interval=0.2)


@dataclass(frozen=True, slots=True)
class Message:
    seq: int
    subject: str
    headers: dict[str, str]
    body: bytes

    @property
    def msg_id(self) -> str:
        return self.headers["Nats-Msg-Id"]


@pytest.fixture
def relay_settings(settings: Settings) -> Settings:
    """Limits of our own, to see them on the stream."""
    return settings.model_copy(
        update={
            "projection_poll_interval": 0.2,
            "events_stream_max_age": 3600.0,
            "events_stream_max_bytes": 64 * 1_048_576,
            "events_duplicate_window": 120.0,
        }
    )


def stream(settings: Settings) -> tuple[StreamInfo, list[Message]]:
    """The stream's info and every message in it, in stream order."""

    async def read() -> tuple[StreamInfo, list[Message]]:
        client = await connect_nats(settings, name="test-reader")
        try:
            js = client.jetstream()
            name = stream_name(settings, "events")
            info = await js.stream_info(name)
            assert info.state.messages == 0 or info.state.first_seq == 1  # nothing expired
            messages = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                raw = await js.get_msg(name, seq)
                assert raw.subject is not None
                assert raw.data is not None
                messages.append(Message(seq, raw.subject, dict(raw.headers or {}), raw.data))
            assert len(messages) == info.state.messages
            return info, messages
        finally:
            await client.close()

    return asyncio.run(read())


def messages(settings: Settings) -> list[Message]:
    return stream(settings)[1]


@contextmanager
def relay(settings: Settings, store: EventStore) -> Iterator[Fanout]:
    with running_fanout(settings, store, relay=True, consumers=False, deliveries=False) as it:
        yield it


def relay_row(url: str) -> dict[str, Any]:
    with connect(url) as conn:
        row = relay_status(conn)
    assert row is not None
    return row


def feed_position(url: str) -> int:
    found = live_generation(url, "event_feed")
    assert found is not None
    return found.position


def public_rows(url: str) -> list[dict[str, Any]]:
    with connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT position, team_id, type, visible_to, doc FROM reads.public_events"
            " ORDER BY position"
        ).fetchall()


def wait_relayed(url: str, *, timeout: float = 30.0) -> int:
    """Until the event feed has the whole log and the relay is as far as the feed."""
    target = head(url)
    wait_caught_up(url, "event_feed", timeout=timeout)

    def relayed() -> bool:
        with connect(url) as conn:
            row = relay_status(conn)
        return row is not None and row["position"] >= target

    wait_until(relayed, timeout=timeout, what=f"the relay reaching position {target}")
    return target


def lock_holders(url: str) -> list[int]:
    """Backend pids holding the active relay's advisory lock."""
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = %s AND objid = %s AND objsubid = 2 AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())",
            LOCK,
        ).fetchall()
    return [row[0] for row in rows]


def relay_sessions(url: str) -> int:
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'chronik-relay'"
            " AND datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def add_member(store: EventStore, team: TeamFixture, name: str) -> Actor:
    command = AddMember(email=f"{name}@example.com", display_name=name, role=Role.MEMBER)
    added = teams.add_member(store, CommandContext(actor=team.owner), command)
    return Actor(UUID(added.data["user_id"]), Role.MEMBER, team.team_id)


def create(store: EventStore, actor: Actor, title: str, visibility: str = "team") -> UUID:
    command = CreateEntry(title=title, visibility=Visibility(visibility))
    result = entries.create_entry(store, CommandContext(actor=actor), command)
    return UUID(result.data["id"])


def edit(store: EventStore, actor: Actor, entry_id: UUID, **fields: Any) -> None:
    entries.edit_entry(store, CommandContext(actor=actor), entry_id, EditEntry(**fields))


def test_publishes_the_feed_in_order_with_headers_subjects_and_stream_limits(
    relay_settings: Settings, store: EventStore
) -> None:
    settings, url = relay_settings, relay_settings.database_url_value()
    ns = settings.nats_namespace
    team, other = create_team(store, "One"), create_team(store, "Two")
    member = add_member(store, team, "mia")
    with running_worker(url, store, [EventFeedProjection()], WORKER), relay(settings, store):
        shared = create(store, team.owner, "shared")
        create(store, team.owner, "owner's own", "private")
        edit(store, team.owner, shared, title="shared, edited")
        hidden = create(store, member, "mia's draft", "private")
        edit(store, member, hidden, title="still a draft")
        edit(store, member, hidden, visibility=Visibility.TEAM)  # public from here on
        edit(store, member, hidden, title="published")
        create(store, other.owner, "elsewhere")
        wait_relayed(url)

    rows = public_rows(url)
    info, published = stream(settings)
    assert len(rows) > 10
    assert len(published) == len(rows)
    assert [m.seq for m in published] == list(range(1, len(rows) + 1))
    positions = [int(m.headers["Chronik-Position"]) for m in published]
    assert positions == sorted(positions)
    assert positions == [row["position"] for row in rows]  # position order, every event
    private = 0
    for message, row in zip(published, rows, strict=True):
        doc = orjson.loads(message.body)
        assert doc == row["doc"]
        assert list(doc) == list(ENVELOPE)  # the catalog's key order, not jsonb's
        assert doc["id"] == f"evt_{row['position']}"
        assert message.subject == f"{ns}.events.{row['team_id']}.{row['type']}"
        expected = {
            "Nats-Msg-Id": doc["id"],
            "Chronik-Position": str(row["position"]),
            "Chronik-Team": str(row["team_id"]),
            "Chronik-Type": row["type"],
            # nats-py's publish(stream=...): JetStream rejects a publish that another
            # stream would take, and keeps the header with the message.
            "Nats-Expected-Stream": stream_name(settings, "events"),
        }
        if row["visible_to"] is not None:
            expected["Chronik-Visible-To"] = str(row["visible_to"])
            private += 1
        assert message.headers == expected
    # The owner's private entry (1 event) and mia's while it was private (2 events).
    assert private == 3
    assert {int(m.headers["Chronik-Position"]) for m in published} == {r["position"] for r in rows}

    # Each reader's GET /events is exactly the stream's messages that reader may see.
    with connect(url) as conn:
        for t, reader in ((team, team.owner.user_id), (team, member.user_id), (other, None)):
            user = reader or other.owner.user_id
            page = list_events(conn, t.team_id, user, after=0, limit=1000)
            visible = [
                orjson.loads(m.body)
                for m in published
                if m.headers["Chronik-Team"] == str(t.team_id)
                and m.headers.get("Chronik-Visible-To", str(user)) == str(user)
            ]
            assert page.events == visible
            assert not page.has_more

    assert info.config.name == stream_name(settings, "events") == f"{ns.upper()}_EVENTS"
    assert info.config.subjects == [f"{ns}.events.>"]
    assert info.config.max_age == 3600.0
    assert info.config.max_bytes == 64 * 1_048_576
    assert info.config.duplicate_window == 120.0
    assert info.config.storage == StorageType.FILE
    status = relay_row(url)
    assert status["position"] == feed_position(url)
    assert status["published"] == len(rows)
    assert status["last_error"] is None


def test_a_republish_adds_nothing_to_the_stream(
    relay_settings: Settings, store: EventStore
) -> None:
    # Small batches: the republish runs through several, each advancing the position.
    settings = relay_settings.model_copy(update={"relay_batch_size": 7})
    url = settings.database_url_value()
    team = create_team(store)
    with running_worker(url, store, [EventFeedProjection()], WORKER):
        for n in range(30):
            write_entry(store, team.owner, f"entry {n}")
        with relay(settings, store):
            wait_relayed(url)
        before = messages(settings)
        first = relay_row(url)
        assert first["published"] == len(before) == len(public_rows(url)) >= 30

        with connect(url) as conn:
            conn.execute("UPDATE relay_positions SET position = 0")
        # Restarted with other limits: the stream is brought up to them too.
        changed = settings.model_copy(update={"events_stream_max_age": 7200.0})
        with relay(changed, store):
            wait_relayed(url)
            # Everything went out again (published counts what was acknowledged).
            wait_until(
                lambda: relay_row(url)["published"] == 2 * len(before),
                timeout=30,
                what="the republish",
            )

    info, after = stream(settings)
    assert after == before  # JetStream dropped every repeat by its Nats-Msg-Id
    assert info.config.max_age == 7200.0
    status = relay_row(url)
    assert status["position"] == feed_position(url) == head(url)
    assert status["last_error"] is None


def test_publishing_batches_leaves_no_subscription_or_task_behind(
    relay_settings: Settings,
) -> None:
    """Every batch once took a JetStream context of its own, whose first
    publish subscribed the connection to an acknowledgement inbox (with an
    asyncio task) for good: the fan-out grew ~7 KB a batch (the soak's leak).
    Now the publisher's subscriptions and the loop's tasks stay as they were
    after its first batch."""
    subject = event_subject(relay_settings, "00000000-0000-0000-0000-000000000001", "test")

    def batch(n: int) -> list[OutMessage]:
        return [OutMessage(subject, b"{}", {"Nats-Msg-Id": f"{n}-{i}"}) for i in range(3)]

    async def publish() -> tuple[tuple[int, int], tuple[int, int]]:
        publisher = JetStreamPublisher(relay_settings)
        try:
            await publisher.publish(batch(0))
            client = publisher._client
            assert client is not None
            before = len(client._subs), len(asyncio.all_tasks())
            for n in range(1, 51):
                await publisher.publish(batch(n))
            return before, (len(client._subs), len(asyncio.all_tasks()))
        finally:
            await publisher.close()

    before, after = asyncio.run(publish())
    assert after == before
    info, published = stream(relay_settings)
    assert len(published) == info.state.messages == 51 * 3


def test_a_wait_for_progress_takes_every_notification_kept_meanwhile(
    settings: Settings,
) -> None:
    """Progress notified while the relay's connection runs its queries is kept
    by psycopg until the next wait. A wait once took one of them: under load
    the rest piled up (925 queued Notify objects at one moment of a soak) and
    every wait returned at once instead of waiting."""
    url = settings.database_url_value()

    async def left_after_a_wait() -> list[Notify]:
        async with (
            await AsyncConnection.connect(url, autocommit=True) as relay_conn,
            await AsyncConnection.connect(url, autocommit=True) as projections,
        ):
            await relay_conn.execute(f"LISTEN {PROGRESS_CHANNEL}")
            for n in range(20):
                await projections.execute(f"NOTIFY {PROGRESS_CHANNEL}, '{n}'")

            # Queries, as the relay runs between waits: psycopg keeps what
            # arrives meanwhile. Until all 20 are kept (the case under test).
            async def all_kept() -> bool:
                await relay_conn.execute("SELECT 1")
                return len(relay_conn._notifies_backlog or ()) >= 20

            await eventually(all_kept, what="all 20 notifications arriving", within=10)
            await _next_notify(relay_conn, 1.0)
            return [n async for n in relay_conn.notifies(timeout=0)]

    assert asyncio.run(left_after_a_wait()) == []


def test_one_relay_is_active_and_the_other_takes_over(
    relay_settings: Settings, store: EventStore
) -> None:
    settings, url = relay_settings, relay_settings.database_url_value()
    team = create_team(store)

    def write(count: int) -> None:
        for n in range(count):
            write_entry(store, team.owner, f"entry {n}")

    first = Fanout(settings, store, relay=True, consumers=False, deliveries=False)
    second = Fanout(settings, store, relay=True, consumers=False, deliveries=False)
    running: list[Fanout] = []

    def start(service: Fanout) -> None:
        service.start()
        running.append(service)

    def stop(service: Fanout) -> None:
        running.remove(service)
        service.stop()

    with running_worker(url, store, [EventFeedProjection()], WORKER):
        try:
            write(10)
            start(first)
            wait_until(lambda: len(lock_holders(url)) == 1, timeout=30, what="an active relay")
            (active,) = lock_holders(url)
            wait_relayed(url)
            start(second)
            wait_until(lambda: relay_sessions(url) == 2, timeout=30, what="a relay standing by")
            write(10)
            wait_relayed(url)
            assert lock_holders(url) == [active]  # the first stays active
            assert relay_sessions(url) == 2

            stop(first)
            write(10)
            wait_until(
                lambda: lock_holders(url) not in ([], [active]),
                timeout=30,
                what="the second relay to take over",
            )
            wait_relayed(url)
            wait_until(lambda: relay_sessions(url) == 1, timeout=10, what="the first to be gone")
        finally:
            for service in reversed(running):
                service.stop()

    rows = public_rows(url)
    published = messages(settings)
    ids = [m.msg_id for m in published]
    assert len(ids) == len(set(ids)) == len(rows)
    assert ids == [row["doc"]["id"] for row in rows]
    status = relay_row(url)
    assert status["position"] == feed_position(url)
    # Each event was published once: no relay ever published beside the other.
    assert status["published"] == len(rows)


def test_commands_go_on_while_nats_is_down_and_the_relay_catches_up(
    relay_settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    nats = EmbeddedNats(tmp_path)
    nats.start()
    settings = relay_settings.model_copy(update={"nats_url": nats.url, "relay_ack_timeout": 2.0})
    url = settings.database_url_value()
    team = create_team(store)
    try:
        with running_worker(url, store, [EventFeedProjection()], WORKER), relay(settings, store):
            for n in range(5):
                write_entry(store, team.owner, f"before {n}")
            reached = wait_relayed(url)

            nats.stop()
            written = [write_entry(store, team.owner, f"during {n}") for n in range(10)]
            assert written == sorted(written)
            assert written[0] > reached
            wait_caught_up(url, "event_feed")
            wait_until(
                lambda: relay_row(url)["last_error"] is not None,
                timeout=30,
                what="the relay to record that it cannot publish",
            )
            status = relay_row(url)
            assert status["position"] == reached < written[-1] <= feed_position(url)
            # A second failed try: the client buffers each try's publishes while it
            # reconnects and sends them all once NATS is back, so repeats do reach it.
            wait_until(
                lambda: relay_row(url)["last_error_at"] != status["last_error_at"],
                timeout=30,
                what="the relay to try again",
            )
            assert relay_row(url)["position"] == reached

            nats.start()
            wait_relayed(url, timeout=60)
            status = relay_row(url)
            assert status["last_error"] is None
            assert status["last_error_at"] is not None  # the outage stays on record
            assert status["position"] == feed_position(url)

        rows = public_rows(url)
        published = messages(settings)
        ids = [m.msg_id for m in published]
        assert len(published) == len(rows)  # every event once: repeats were dropped
        assert len(ids) == len(set(ids))
        assert set(ids) == {row["doc"]["id"] for row in rows}
        assert ids == [row["doc"]["id"] for row in rows]  # and still in position order
    finally:
        nats.stop()
