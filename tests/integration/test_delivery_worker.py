"""The delivery worker (infra.delivery_worker, infra.deliveries) against real
PostgreSQL and real loopback receivers: no double sends with several
workers, leases, superseded claims, Retry-After, capped answers and the SSRF
guard at delivery time.

The first test runs the whole fan-out (relay, consumer, workers). The others
enqueue deliveries as the consumer does (``infra.deliveries.record_deliveries``
with the relay's message body), so that NATS is not what they depend on.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from ipaddress import ip_network
from typing import Any
from uuid import UUID

import orjson
import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from commands import webhooks
from commands.context import CommandContext
from commands.models import RegisterWebhook
from infra import deliveries
from infra.db import PostgresTarget
from infra.deliveries import Attempt, Claim
from infra.delivery_policy import Verdict
from infra.delivery_worker import EXCERPT_CHARS
from infra.devstack.processes import wait_until
from infra.event_store import EventStore
from infra.event_stream import event_subject
from infra.fanout import Fanout
from infra.messaging import connect_nats, stream_name
from infra.outbound import check_webhook_target
from infra.relay import messages_of
from infra.settings import Settings
from infra.webhook_fanout import CONSUMER
from projections.event_feed import EventFeedProjection
from projections.runner import RunnerConfig
from projections.webhooks import WebhooksProjection
from tests.projection_support import (
    TeamFixture,
    connect,
    create_team,
    head,
    running_fanout,
    running_worker,
    seed_entries,
    wait_caught_up,
    write_entry,
)
from tests.webhook_receivers import receiver

WORKER = RunnerConfig(batch_size=100, poll_interval=0.2, standby_interval=0.2)
LOOPBACK = [ip_network("127.0.0.0/8"), ip_network("::1/128")]
# Registration admits loopback receivers (the allow-list of a test deployment).
LOOPBACK_GUARD = functools.partial(check_webhook_target, allowed=LOOPBACK)


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    """Loopback receivers admitted, retries in fractions of a second; the
    events stream goes with the test's namespace (tests/conftest.py)."""
    return settings.model_copy(
        update={
            "webhook_allowed_networks": LOOPBACK,
            "webhook_retry_schedule": [0.0, 0.2, 0.2, 0.2, 0.2],
            "webhook_timeout": 5.0,
            "webhook_claim_lease": 10.0,
            "projection_poll_interval": 0.2,
        }
    )


@contextmanager
def delivery_worker(settings: Settings, store: EventStore) -> Iterator[Fanout]:
    with running_fanout(settings, store, relay=False, consumers=False, deliveries=True) as it:
        yield it


@contextmanager
def projected(url: str, store: EventStore) -> Iterator[None]:
    """The event feed and the webhooks read model, kept up to date."""
    with running_worker(url, store, [EventFeedProjection(), WebhooksProjection()], WORKER):
        yield


def register(store: EventStore, team: TeamFixture, url: str, types: list[str]) -> tuple[UUID, str]:
    command = RegisterWebhook(url=url, event_types=types, description="test receiver")
    result = webhooks.register_webhook(
        store, CommandContext(actor=team.owner), command, url_guard=LOOPBACK_GUARD
    )
    return UUID(result.data["id"]), str(result.data["secret"])


def conninfo(url: str) -> str:
    return PostgresTarget.from_url(url).conninfo()


def enqueue(settings: Settings, upto: int) -> int:
    """What the webhook consumer does with the relay's message for the last
    entry.created at or before ``upto`` (a command's position is that of its
    last event): one delivery per matching endpoint, due now."""
    url = settings.database_url_value()
    wait_caught_up(url, "event_feed")
    wait_caught_up(url, "webhooks")
    with connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT position, team_id, type, visible_to, doc FROM reads.public_events"
            " WHERE position <= %s AND type = 'entry.created' ORDER BY position DESC LIMIT 1",
            (upto,),
        ).fetchone()
    assert row is not None
    (message,) = messages_of(settings, [row])

    async def record() -> int:
        async with await AsyncConnection.connect(conninfo(url), autocommit=True) as conn:
            event = (orjson.loads(message.body), message.body.decode())
            return await deliveries.record_deliveries(conn, [event], first_delay=0.0)

    return asyncio.run(record())


def claim(url: str, *, lease: float) -> list[Claim]:
    async def run() -> list[Claim]:
        async with await AsyncConnection.connect(conninfo(url), autocommit=True) as conn:
            return await deliveries.claim_due(conn, limit=100, lease=lease)

    return asyncio.run(run())


def query(url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    with connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, params).fetchall()


def delivery_rows(url: str) -> list[dict[str, Any]]:
    return query(url, "SELECT * FROM webhook_deliveries ORDER BY id")


def attempt_rows(url: str) -> list[dict[str, Any]]:
    return query(url, "SELECT * FROM webhook_attempts ORDER BY delivery_id, attempt")


def wait_settled(url: str, count: int, *, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Until ``count`` deliveries exist and none is pending any more."""

    def settled() -> bool:
        rows = delivery_rows(url)
        return len(rows) == count and all(r["status"] != "pending" for r in rows)

    wait_until(settled, timeout=timeout, what=f"{count} deliveries settled")
    return delivery_rows(url)


def test_300_events_two_workers_every_id_once(hook_settings: Settings, store: EventStore) -> None:
    settings, url = hook_settings, hook_settings.database_url_value()
    team = create_team(store)
    with receiver() as hook:
        _, secret = register(store, team, hook.url, ["entry.created"])
        with (
            projected(url, store),
            running_fanout(settings, store, relay=True, consumers=True, deliveries=False),
            delivery_worker(settings, store),
            delivery_worker(settings, store),
        ):
            seed_entries(store, team.owner, 300, per_save=25)
            wait_caught_up(url, "event_feed")
            created = "SELECT doc->>'id' AS id FROM reads.public_events WHERE type = %s"
            expected = {r["id"] for r in query(url, created, "entry.created")}
            assert len(expected) == 300
            wait_until(lambda: hook.ids() >= expected, timeout=60, what="all 300 deliveries")
            rows = wait_settled(url, 300)
            received = hook.received()

    assert {r["status"] for r in rows} == {"succeeded"}
    assert {r["attempts"] for r in rows} == {1}
    assert {r["event_id"] for r in rows} == expected
    ids = [r.webhook_id for r in received]
    assert len(ids) == len(set(ids)) == 300  # no double sends
    assert set(ids) == expected
    assert {d["id"] for d in hook.verified_docs(secret)} == expected
    attempts = attempt_rows(url)
    assert len(attempts) == 300
    assert sorted(a["delivery_id"] for a in attempts) == sorted(r["id"] for r in rows)
    assert {(a["attempt"], a["status_code"], a["error"]) for a in attempts} == {(1, 204, None)}


def test_a_dead_workers_claim_is_sent_after_its_lease(
    hook_settings: Settings, store: EventStore
) -> None:
    settings, url = hook_settings, hook_settings.database_url_value()
    team = create_team(store)
    lease = 2.0
    with receiver() as hook, projected(url, store):
        register(store, team, hook.url, ["entry.created"])
        assert enqueue(settings, write_entry(store, team.owner, "leased")) == 1
        before = time.time()
        (dead,) = claim(url, lease=lease)  # a worker that dies now, before recording
        assert dead.attempts == 1
        with delivery_worker(settings, store):
            (row,) = wait_settled(url, 1)
        (request,) = hook.received()

    assert request.at >= before + lease  # not before the lease ran out
    assert request.webhook_id == dead.event_id
    assert (row["status"], row["attempts"], row["last_status_code"]) == ("succeeded", 2, 204)
    # Attempt 1 was never recorded: the dead worker's outcome is unknown.
    assert [(a["attempt"], a["status_code"]) for a in attempt_rows(url)] == [(2, 204)]


def test_a_superseded_claim_records_no_outcome(hook_settings: Settings, store: EventStore) -> None:
    settings, url = hook_settings, hook_settings.database_url_value()
    team = create_team(store)
    with projected(url, store):
        register(store, team, "http://127.0.0.1:9/hook", ["entry.created"])
        assert enqueue(settings, write_entry(store, team.owner, "claimed twice")) == 1
    (stale,) = claim(url, lease=0.0)  # its lease runs out at once
    (live,) = claim(url, lease=60.0)
    assert (stale.id, stale.attempts, live.attempts) == (live.id, 1, 2)
    (before,) = delivery_rows(url)

    def judge_disabling(failing_for: float | None) -> Verdict:
        return Verdict("failed", disable_reason="must not be applied")

    def outcome(status_code: int) -> Attempt:
        return Attempt(datetime.now(UTC), 5, status_code, None, "answer")

    async def record(which: Claim, status_code: int, judge: Any) -> Verdict | None:
        async with await AsyncConnection.connect(conninfo(url), autocommit=True) as conn:
            found: Verdict | None = await deliveries.record_attempt(
                conn, which, outcome(status_code), judge
            )
            return found

    assert asyncio.run(record(stale, 500, judge_disabling)) is None
    (after_stale,) = delivery_rows(url)
    assert after_stale == before  # status, due time, last answer: all unchanged

    async def succeed(which: Claim) -> set[tuple[int, int]]:
        async with await AsyncConnection.connect(conninfo(url), autocommit=True) as conn:
            return await deliveries.record_successes(conn, [(which, outcome(204))])

    with pytest.raises(ValueError, match="record_successes"):  # it would count as a failure
        asyncio.run(record(live, 204, judge_disabling))
    assert delivery_rows(url) == [after_stale]
    assert asyncio.run(succeed(live)) == {(live.id, live.attempts)}
    (done,) = delivery_rows(url)
    assert (done["status"], done["last_status_code"], done["attempts"]) == ("succeeded", 204, 2)

    # A late outcome of the stale claim, failure or success, does not undo the live one.
    assert asyncio.run(record(stale, 500, judge_disabling)) is None
    assert asyncio.run(succeed(stale)) == set()
    assert delivery_rows(url) == [done]


def test_successes_recorded_together_settle_only_the_live_claims(
    hook_settings: Settings, store: EventStore
) -> None:
    """The delivery worker records its successes many to a statement: each
    live claim settles its delivery, a superseded one only logs its attempt,
    and two successes to one endpoint update its health row once."""
    settings, url = hook_settings, hook_settings.database_url_value()
    team = create_team(store)
    with projected(url, store):
        register(store, team, "http://127.0.0.1:9/hook", ["entry.created"])
        assert enqueue(settings, write_entry(store, team.owner, "first")) == 1
        assert enqueue(settings, write_entry(store, team.owner, "second")) == 1
    stale_first, stale_second = claim(url, lease=0.0)  # both leases run out at once
    live_first, live_second = claim(url, lease=60.0)
    assert (stale_first.id, live_first.attempts) == (live_first.id, 2)

    async def record(sent: list[Claim]) -> set[tuple[int, int]]:
        async with await AsyncConnection.connect(conninfo(url), autocommit=True) as conn:
            return await deliveries.record_successes(
                conn, [(c, Attempt(datetime.now(UTC), 5, 200, None, "ok")) for c in sent]
            )

    # The second delivery's stale claim answers first: only its attempt is logged.
    assert asyncio.run(record([stale_second])) == set()
    settled = asyncio.run(record([stale_first, live_first, live_second]))
    assert settled == {(live_first.id, 2), (live_second.id, 2)}
    rows = delivery_rows(url)
    assert [(r["status"], r["attempts"], r["last_status_code"]) for r in rows] == [
        ("succeeded", 2, 200),
        ("succeeded", 2, 200),
    ]
    assert [(a["delivery_id"], a["attempt"]) for a in attempt_rows(url)] == [
        (live_first.id, 1),
        (live_first.id, 2),
        (live_second.id, 1),
        (live_second.id, 2),
    ]
    (health,) = query(url, "SELECT * FROM webhook_endpoint_health")
    assert (health["consecutive_failures"], health["failing_since"]) == (0, None)
    assert health["last_success_at"] is not None


def test_a_sends_slot_is_free_before_its_success_is_recorded(
    hook_settings: Settings, store: EventStore
) -> None:
    """One slot, two deliveries, and successes that cannot be written yet
    (webhook_attempts locked): the second is still sent, and both settle
    once the lock is gone."""
    settings = hook_settings.model_copy(update={"webhook_concurrency": 1})
    url = settings.database_url_value()
    team = create_team(store)
    with receiver() as hook, projected(url, store):
        register(store, team, hook.url, ["entry.created"])
        assert enqueue(settings, write_entry(store, team.owner, "first")) == 1
        assert enqueue(settings, write_entry(store, team.owner, "second")) == 1
        with psycopg.connect(url) as blocker:  # one transaction until the rollback
            blocker.execute("LOCK TABLE webhook_attempts IN EXCLUSIVE MODE")
            with delivery_worker(settings, store):
                wait_until(lambda: len(hook.ids()) == 2, timeout=20, what="both sent")
                assert {r["status"] for r in delivery_rows(url)} == {"pending"}
                blocker.rollback()
                rows = wait_settled(url, 2)

    assert [(r["status"], r["attempts"]) for r in rows] == [("succeeded", 1)] * 2
    assert [(a["attempt"], a["status_code"]) for a in attempt_rows(url)] == [(1, 204)] * 2


def test_retry_after_delays_the_next_attempt(hook_settings: Settings, store: EventStore) -> None:
    settings = hook_settings.model_copy(update={"webhook_retry_schedule": [0.0, 0.05, 0.05, 0.05]})
    url = settings.database_url_value()
    team = create_team(store)
    with (
        receiver(fail_first=2, answer_headers={"Retry-After": "1"}) as busy,
        projected(url, store),
    ):
        register(store, team, busy.url, ["entry.created"])
        enqueue(settings, write_entry(store, team.owner, "come back later"))
        with delivery_worker(settings, store):
            (row,) = wait_settled(url, 1)
        arrivals = [r.at for r in busy.received()]

    assert row["status"] == "succeeded"
    assert [a["status_code"] for a in attempt_rows(url)] == [500, 500, 204]
    assert len(arrivals) == 3
    # The schedule says 0.05 s; the receiver asked for 1 s, and got at least that.
    for earlier, later in itertools.pairwise(arrivals):
        assert later - earlier >= 1.0


def test_a_huge_answer_is_cut_at_the_cap(hook_settings: Settings, store: EventStore) -> None:
    settings = hook_settings.model_copy(update={"webhook_response_cap": 8192})
    url = settings.database_url_value()
    team = create_team(store)
    size = 50 * 1_048_576
    script: dict[str, Any] = {
        "status": 200,
        "body_size": size,
        "body_chunk": 65_536,
        "body_chunk_delay": 0.002,  # the whole body would take well over a second
    }
    with receiver(**script) as chatty, projected(url, store):
        register(store, team, chatty.url, ["entry.created"])
        enqueue(settings, write_entry(store, team.owner, "answer briefly"))
        with delivery_worker(settings, store):
            (row,) = wait_settled(url, 1)
        wait_until(lambda: len(chatty.bodies) == 1, timeout=30, what="the receiver to stop")
        (written,) = chatty.bodies

    assert row["status"] == "succeeded"
    (attempt,) = attempt_rows(url)
    assert (attempt["status_code"], attempt["error"]) == (200, None)
    assert attempt["response_excerpt"] == "x" * EXCERPT_CHARS
    # The worker hung up after the cap: the receiver could not write the rest.
    assert not written.complete
    assert written.written < size


def test_the_guard_refuses_loopback_at_delivery_time(
    hook_settings: Settings, store: EventStore
) -> None:
    hostname = socket.gethostname()
    resolved = {info[4][0] for info in socket.getaddrinfo(hostname, 80, type=socket.SOCK_STREAM)}
    assert resolved == {"127.0.0.1"}, f"{hostname} must resolve to loopback only here"
    # Registered while the allow-list admitted loopback; delivered with none.
    settings = hook_settings.model_copy(
        update={"webhook_allowed_networks": [], "webhook_retry_schedule": [0.0, 3600.0]}
    )
    url = settings.database_url_value()
    team = create_team(store)
    with receiver() as target, projected(url, store):
        port = target.port
        expected = {
            f"http://127.0.0.1:{port}/": "refused: 127.0.0.1 is a loopback address",
            f"http://[::1]:{port}/": "refused: ::1 is a loopback address",
            f"http://[::ffff:127.0.0.1]:{port}/": (
                "refused: ::ffff:127.0.0.1 is an IPv4-mapped form of 127.0.0.1, a loopback address"
            ),
            f"http://{hostname}:{port}/": f"refused: {hostname}: 127.0.0.1 is a loopback address",
        }
        endpoints = {register(store, team, u, ["entry.created"])[0]: u for u in expected}
        assert enqueue(settings, write_entry(store, team.owner, "to nowhere")) == len(expected)
        with delivery_worker(settings, store):
            wait_until(
                lambda: len(attempt_rows(url)) == len(expected),
                timeout=30,
                what="an attempt per endpoint",
            )
        assert target.received() == []

    by_delivery = {r["id"]: r for r in delivery_rows(url)}
    for attempt in attempt_rows(url):
        delivery = by_delivery[attempt["delivery_id"]]
        endpoint_url = endpoints[delivery["endpoint_id"]]
        assert attempt["error"] == expected[endpoint_url], endpoint_url
        assert attempt["error"].startswith("refused:")
        assert attempt["status_code"] is None
        assert attempt["response_excerpt"] is None
        # A refusal is a failed attempt: retried on the schedule, not sent elsewhere.
        assert (delivery["status"], delivery["last_error"]) == ("pending", attempt["error"])


def test_events_are_matched_without_waiting_while_no_endpoint_changed(
    hook_settings: Settings, store: EventStore
) -> None:
    """The consumer waits for the webhooks read model only across a change to
    an endpoint; other events it matches at once, however far behind the
    read model is."""
    url = hook_settings.database_url_value()
    team = create_team(store)
    register(store, team, "http://127.0.0.1:9/a", [])
    with projected(url, store):
        wait_caught_up(url, "webhooks")
    model_at = head(url)
    entries_at = [write_entry(store, team.owner, f"e{n}") for n in range(3)]
    register(store, team, "http://127.0.0.1:9/b", [])
    changed_at = head(url)
    later = write_entry(store, team.owner, "after the change")

    async def matched(upto: int) -> int | None:
        async with await AsyncConnection.connect(conninfo(url), autocommit=True) as conn:
            return await deliveries.matched_up_to(conn, upto)

    assert asyncio.run(matched(model_at)) == model_at
    assert asyncio.run(matched(entries_at[-1])) == entries_at[-1]
    assert asyncio.run(matched(later)) == changed_at - 1  # waits for the read model there


def test_a_malformed_message_is_rejected_and_the_next_delivered(
    hook_settings: Settings, store: EventStore
) -> None:
    """Something that is not one of the relay's documents is terminated at once
    (redelivering it cannot help), and does not hold up the events after it."""
    settings, url = hook_settings, hook_settings.database_url_value()
    team = create_team(store)

    async def publish_garbage() -> None:
        client = await connect_nats(settings, name="test-garbage")
        try:
            js = client.jetstream()
            await js.publish(event_subject(settings, team.team_id, "entry.created"), b"{not json")
        finally:
            await client.close()

    async def consumer_state() -> tuple[int, int]:
        client = await connect_nats(settings, name="test-consumer-info")
        try:
            info = await client.jetstream().consumer_info(stream_name(settings, "events"), CONSUMER)
            return info.num_ack_pending or 0, info.num_redelivered or 0
        finally:
            await client.close()

    with receiver() as hook:
        register(store, team, hook.url, ["entry.created"])
        with projected(url, store), running_fanout(settings, store):
            write_entry(store, team.owner, "before")
            wait_until(lambda: len(hook.ids()) == 1, timeout=30, what="the first delivery")
            asyncio.run(publish_garbage())
            write_entry(store, team.owner, "after")
            wait_until(lambda: len(hook.ids()) == 2, timeout=30, what="the delivery after it")
            wait_until(
                lambda: asyncio.run(consumer_state()) == (0, 0),
                timeout=30,
                what="nothing pending or redelivered",
            )
    assert [r.doc["type"] for r in hook.received()] == ["entry.created", "entry.created"]
