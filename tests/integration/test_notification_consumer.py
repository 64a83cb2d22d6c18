"""The notification consumer (infra.notification_consumer) against real
PostgreSQL and real NATS JetStream: commands append events, the projections
and the relay run as in `chronik worker`, and the consumer turns the stream
into notifications and immediate emails for exactly the right members, as
their preferences say, and never twice."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from nats.js.errors import NotFoundError
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from aggregates.base import Actor, Role
from aggregates.journal_entry import Visibility
from commands import entries, notifications, teams, webhooks
from commands.context import CommandContext
from commands.models import (
    AddMember,
    ChangeRole,
    CreateEntry,
    CreateTeam,
    EditEntry,
    RegisterWebhook,
    SetNotificationPreference,
)
from commands.webhook_health import disable_failing_webhook
from infra.db import PostgresTarget
from infra.devstack.processes import wait_until
from infra.event_store import EventStore
from infra.event_stream import event_subject
from infra.messaging import connect_nats, stream_name
from infra.notification_consumer import CONSUMER
from infra.notifications import record_notifications
from infra.projection_wiring import projections_for
from infra.relay import messages_of
from infra.settings import Settings
from projections.entries import EntriesProjection
from tests.projection_support import connect, running_fanout, running_worker, wait_caught_up


@dataclass(frozen=True)
class Crew:
    team_id: UUID
    owner: Actor
    admin: Actor
    writer: Actor
    auditor: Actor

    def ctx(self, actor: Actor) -> CommandContext:
        return CommandContext(actor=actor)


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.model_copy(update={"projection_poll_interval": 0.2})


@pytest.fixture
def running(fast: Settings, store: EventStore) -> Iterator[None]:
    """Every projection, the relay and the consumers (no webhook deliveries)."""
    url = fast.database_url_value()
    with (
        running_worker(url, store, projections_for(fast)),
        running_fanout(fast, store, deliveries=False),
    ):
        yield


def make_crew(store: EventStore, plan: str = "enterprise") -> Crew:
    created = teams.create_team(
        store, CreateTeam(name="Acme", plan=plan, owner_email="olga@example.com")
    )
    team_id = UUID(created.result.data["id"])
    owner = Actor(UUID(created.result.data["owner_user_id"]), Role.OWNER, team_id)
    ctx = CommandContext(actor=owner)

    def add(name: str, role: Role) -> Actor:
        body = AddMember(email=f"{name}@example.com", display_name=name.title(), role=role)
        result = teams.add_member(store, ctx, body)
        return Actor(UUID(result.data["user_id"]), role, team_id)

    return Crew(
        team_id, owner, add("ada", Role.ADMIN), add("wim", Role.MEMBER), add("uli", Role.AUDITOR)
    )


def write(store: EventStore, actor: Actor, title: str, **fields: Any) -> UUID:
    result = entries.create_entry(
        store, CommandContext(actor=actor), CreateEntry(title=title, **fields)
    )
    return UUID(result.data["id"])


def rows(url: str, query: str, *params: Any) -> list[dict[str, Any]]:
    with connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def inbox_of(url: str, team_id: UUID) -> list[dict[str, Any]]:
    return rows(
        url,
        "SELECT user_id, kind, position, title, body, data FROM notifications"
        " WHERE team_id = %s ORDER BY position, user_id",
        team_id,
    )


def outbox_of(url: str, team_id: UUID) -> list[dict[str, Any]]:
    return rows(
        url,
        "SELECT o.user_id, o.to_address, o.subject, o.body, n.kind, n.position"
        " FROM email_outbox o JOIN notifications n ON n.id = o.notification_id"
        " WHERE o.team_id = %s ORDER BY n.position, o.user_id",
        team_id,
    )


def by_kind(found: list[dict[str, Any]]) -> dict[str, set[UUID]]:
    out: dict[str, set[UUID]] = {}
    for row in found:
        out.setdefault(row["kind"], set()).add(row["user_id"])
    return out


def consumer_idle(settings: Settings) -> bool:
    """The consumer acknowledged everything in the stream."""

    async def check() -> bool:
        client = await connect_nats(settings, name="test-consumer-info")
        try:
            js = client.jetstream()
            stream = await js.stream_info(stream_name(settings, "events"))
            info = await js.consumer_info(stream_name(settings, "events"), CONSUMER)
            return (
                info.num_ack_pending == 0
                and info.num_pending == 0
                and info.ack_floor is not None
                and info.ack_floor.stream_seq == stream.state.last_seq
            )
        finally:
            await client.close()

    return asyncio.run(check())


def publish(settings: Settings, subject: str, body: bytes, headers: dict[str, str]) -> None:
    async def send() -> None:
        client = await connect_nats(settings, name="test-publisher")
        try:
            await client.jetstream().publish(subject, body, headers=headers)
        finally:
            await client.close()

    asyncio.run(send())


def settle(settings: Settings, store: EventStore) -> None:
    """Waits for the relay to publish the whole log and the consumer to handle it."""
    url = settings.database_url_value()
    wait_caught_up(url, "event_feed")

    def relayed() -> bool:
        found = rows(url, "SELECT position FROM relay_positions")
        return bool(found) and found[0]["position"] >= store.head_position()

    wait_until(relayed, timeout=30, what="the relay publishing the log")
    wait_until(lambda: consumer_idle(settings), timeout=30, what="the consumer acking all")


@pytest.mark.usefixtures("running")
def test_each_rule_notifies_exactly_the_right_members(fast: Settings, store: EventStore) -> None:
    url = fast.database_url_value()
    crew = make_crew(store)
    o, a, w, u = (m.user_id for m in (crew.owner, crew.admin, crew.writer, crew.auditor))
    shared = write(store, crew.writer, "Shared", body="hello team")
    private = write(store, crew.writer, "Mine", visibility=Visibility.PRIVATE)
    entries.edit_entry(store, crew.ctx(crew.writer), private, EditEntry(title="Still mine"))
    entries.edit_entry(store, crew.ctx(crew.writer), private, EditEntry(visibility=Visibility.TEAM))
    newbie = teams.add_member(
        store, crew.ctx(crew.owner), AddMember(email="nia@example.com", display_name="Nia")
    )
    nia = UUID(newbie.data["user_id"])
    teams.change_role(store, crew.ctx(crew.owner), w, ChangeRole(role=Role.ADMIN))
    registered = webhooks.register_webhook(
        store,
        crew.ctx(crew.owner),
        RegisterWebhook(url="https://hooks.example.org/in"),
        url_guard=lambda given: given,
    )
    disable_failing_webhook(store, crew.team_id, UUID(registered.data["id"]), "HTTP 410 Gone")
    settle(fast, store)

    found = inbox_of(url, crew.team_id)
    per_event: dict[tuple[str, str], set[UUID]] = {}
    for row in found:
        per_event.setdefault((row["kind"], row["data"].get("title") or ""), set()).add(
            row["user_id"]
        )
    assert per_event == {
        # Written as team: everyone else who was a member then.
        ("entry_shared", "Shared"): {o, a, u},
        # Private, edited: nobody. Made team-visible: everyone else (not Nia, added later).
        ("entry_shared", "Still mine"): {o, a, u},
        # Each member the crew was made of, and Nia.
        ("member_added", ""): {a, w, u, nia},
        ("role_changed", ""): {w},
        # Wim is an admin by now.
        ("webhook_disabled", ""): {o, a, w},
    }
    assert [
        r for r in found if r["kind"] == "entry_shared" and r["data"]["entry_id"] == str(shared)
    ]
    texts = {(r["kind"], r["user_id"]): r for r in found}
    assert texts["member_added", nia]["body"] == "You were added to the team Acme as a member."
    assert texts["webhook_disabled", o]["body"] == (
        "The webhook endpoint https://hooks.example.org/in was disabled: HTTP 410 Gone."
    )
    assert texts["role_changed", w]["title"] == "Your role is now admin"
    # With the defaults every notification is also emailed at once, to the member's address.
    emails = outbox_of(url, crew.team_id)
    assert len(emails) == len(found)
    addresses = {o: "olga@example.com", a: "ada@example.com", w: "wim@example.com",
                 u: "uli@example.com", nia: "nia@example.com"}  # fmt: skip
    assert all(e["to_address"] == addresses[e["user_id"]] for e in emails)
    assert {e["subject"] for e in emails if e["kind"] == "member_added"} == {
        "[Acme] You were added to the team Acme"
    }


@pytest.mark.usefixtures("running")
def test_quota_events_and_issued_prompts(fast: Settings, store: EventStore) -> None:
    url = fast.database_url_value()
    crew = make_crew(store, plan="free")
    o, a, w = crew.owner.user_id, crew.admin.user_id, crew.writer.user_id
    for n in range(100):  # the free plan's month: the 90th warns, the 100th exhausts
        write(store, crew.writer, f"private {n}", visibility=Visibility.PRIVATE)
    settle(fast, store)
    assert by_kind(inbox_of(url, crew.team_id)) == {
        "member_added": {a, w, crew.auditor.user_id},
        "quota_threshold": {o, a},
        "quota_exhausted": {o, a},
    }
    exhausted = [r for r in inbox_of(url, crew.team_id) if r["kind"] == "quota_exhausted"]
    assert exhausted[0]["data"]["used"] == exhausted[0]["data"]["limit"] == 100

    # prompt.issued as the scheduler's events are published: a document of the
    # catalog's form, past everything in the log.
    position = store.head_position() + 1000
    doc = {
        "id": f"evt_{position}", "type": "prompt.issued", "position": position,
        "team_id": str(crew.team_id), "aggregate_id": str(uuid4()), "aggregate_version": 2,
        "occurred_at": "2026-01-05T08:00:00+00:00", "actor": None,
        "data": {"due_at": "2026-01-05T08:00:00+00:00", "text": "What did you learn?"},
    }  # fmt: skip
    subject = event_subject(fast, crew.team_id, "prompt.issued")
    publish(fast, subject, orjson.dumps(doc), {"Nats-Msg-Id": f"evt_{position}"})
    wait_until(lambda: consumer_idle(fast), timeout=30, what="the prompt handled")
    issued = [r for r in inbox_of(url, crew.team_id) if r["kind"] == "prompt_issued"]
    # Every member who writes; the auditor does not.
    assert {r["user_id"] for r in issued} == {o, a, w}
    assert issued[0]["body"] == "Today's prompt: What did you learn?"


@pytest.mark.usefixtures("running")
def test_preferences_switch_channels_and_digest_holds_the_email(
    fast: Settings, store: EventStore
) -> None:
    url = fast.database_url_value()
    crew = make_crew(store)

    def prefer(actor: Actor, **flags: bool) -> None:
        notifications.set_notification_preference(
            store, crew.ctx(actor), "entry_shared", SetNotificationPreference(**flags)
        )

    prefer(crew.owner, inbox=False)  # email only: kept for the email, hidden from the inbox
    prefer(crew.admin, digest=True)  # inbox, and the daily digest instead of an email now
    prefer(crew.auditor, inbox=False, email=False)  # nothing at all
    write(store, crew.writer, "Shared")
    settle(fast, store)

    found = {r["user_id"]: r for r in inbox_of(url, crew.team_id) if r["kind"] == "entry_shared"}
    assert set(found) == {crew.owner.user_id, crew.admin.user_id}
    assert found[crew.owner.user_id]["data"]["_delivery"] == {"inbox": False, "email": "immediate"}
    assert found[crew.admin.user_id]["data"]["_delivery"] == {"inbox": True, "email": "digest"}
    emailed = [e["user_id"] for e in outbox_of(url, crew.team_id) if e["kind"] == "entry_shared"]
    assert emailed == [crew.owner.user_id]
    preferences = rows(
        url,
        "SELECT user_id, kind, inbox, email, digest FROM reads.notification_preferences"
        " WHERE team_id = %s",
        crew.team_id,
    )
    assert {(p["user_id"], p["inbox"], p["email"], p["digest"]) for p in preferences} == {
        (crew.owner.user_id, False, True, False),
        (crew.admin.user_id, True, True, True),
        (crew.auditor.user_id, False, False, False),
    }


@pytest.mark.usefixtures("running")
def test_a_message_delivered_again_creates_nothing_twice(fast: Settings, store: EventStore) -> None:
    url = fast.database_url_value()
    crew = make_crew(store)
    write(store, crew.writer, "Once")
    settle(fast, store)
    before, emails = inbox_of(url, crew.team_id), outbox_of(url, crew.team_id)
    assert [r["kind"] for r in before].count("entry_shared") == 3
    assert len(emails) == len(before)

    # The same event published again under another message id (past the
    # duplicate window, or by hand): JetStream delivers it again.
    with connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        feed = cur.execute(
            "SELECT position, team_id, type, visible_to, doc FROM reads.public_events"
            " WHERE team_id = %s AND type = 'entry.created'",
            (crew.team_id,),
        ).fetchall()
    (message,) = messages_of(fast, feed)
    headers = {**message.headers, "Nats-Msg-Id": "again-" + message.headers["Nats-Msg-Id"]}
    publish(fast, message.subject, message.body, headers)
    # And garbage beside it: rejected, never redelivered, blocking nothing.
    publish(fast, message.subject, b"{not json", {"Nats-Msg-Id": "garbage"})
    wait_until(lambda: consumer_idle(fast), timeout=30, what="the repeats handled")
    assert inbox_of(url, crew.team_id) == before
    assert outbox_of(url, crew.team_id) == emails

    # The handler's own path twice, and twice in one batch.
    async def again() -> None:
        conninfo = PostgresTarget.from_url(url).conninfo()
        pool = AsyncConnectionPool(conninfo, kwargs={"autocommit": True}, open=False)
        async with pool, pool.connection() as conn:
            doc = orjson.loads(message.body)
            first = await record_notifications(conn, [doc])
            second = await record_notifications(conn, [doc, doc])
            assert (first.notifications, first.emails) == (0, 0)
            assert (second.notifications, second.emails) == (0, 0)

    asyncio.run(again())
    assert inbox_of(url, crew.team_id) == before


def test_events_from_before_notifications_existed_notify_nobody(
    fast: Settings, store: EventStore
) -> None:
    """The first deploy: the stream still holds days of events, which a new
    durable consumer would replay into every inbox. Those at or before the
    migration's start position are acknowledged and nothing more."""
    url = fast.database_url_value()
    old = make_crew(store)
    write(store, old.owner, "before notifications")
    with connect(url) as conn:
        conn.execute("UPDATE notification_start SET position = %s", (store.head_position(),))
    new = make_crew(store)
    write(store, new.owner, "after")
    with (
        running_worker(url, store, projections_for(fast)),
        running_fanout(fast, store, deliveries=False),
    ):
        settle(fast, store)
    assert inbox_of(url, old.team_id) == []
    assert outbox_of(url, old.team_id) == []
    assert {"member_added", "entry_shared"} <= set(by_kind(inbox_of(url, new.team_id)))


def consumer_retried(settings: Settings) -> bool:
    """The consumer has put a message back at least once (not ready yet)."""

    async def check() -> bool:
        client = await connect_nats(settings, name="test-consumer-info")
        try:
            js = client.jetstream()
            try:
                info = await js.consumer_info(stream_name(settings, "events"), CONSUMER)
            except NotFoundError:  # not declared yet
                return False
            return (info.num_redelivered or 0) > 0
        finally:
            await client.close()

    return asyncio.run(check())


def test_an_entry_made_team_visible_is_named_even_when_the_entries_model_lags(
    fast: Settings, store: EventStore
) -> None:
    # The event does not carry the title; the entries read model does, once it
    # has applied the change. The notice waits for it rather than go out unnamed.
    url = fast.database_url_value()
    crew = make_crew(store)
    with running_worker(url, store, [EntriesProjection()]):
        wait_caught_up(url, "entries")  # built, then stopped: it lags from here
    without_entries = [p for p in projections_for(fast) if p.name != "entries"]
    with (
        running_worker(url, store, without_entries),
        running_fanout(fast, store, deliveries=False),
    ):
        private = write(store, crew.writer, "Mine", visibility=Visibility.PRIVATE)
        entries.edit_entry(
            store, crew.ctx(crew.writer), private, EditEntry(visibility=Visibility.TEAM)
        )
        wait_until(lambda: consumer_retried(fast), timeout=30, what="the notice to wait")
        assert not [r for r in inbox_of(url, crew.team_id) if r["kind"] == "entry_shared"]
        with running_worker(url, store, [EntriesProjection()]):
            settle(fast, store)
    shared = [r for r in inbox_of(url, crew.team_id) if r["kind"] == "entry_shared"]
    assert {r["data"]["title"] for r in shared} == {"Mine"}
    assert {r["user_id"] for r in shared} == {
        crew.owner.user_id,
        crew.admin.user_id,
        crew.auditor.user_id,
    }
