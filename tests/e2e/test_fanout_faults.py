"""Fan-out under faults: NATS stopped for 30 s in the middle of a stream of HTTP
commands (which must not notice: every one succeeds, none waits for NATS),
and the worker killed with SIGKILL in the middle of a burst of deliveries.
Receivers may see an event twice (at-least-once), always under
the same webhook-id with the same body; de-duplicated by webhook-id, each
receives exactly the events its endpoint asked for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from ipaddress import ip_network
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from commands import entries, webhooks
from commands.context import CommandContext
from commands.models import CreateEntry, RegisterWebhook
from infra.db import PostgresTarget
from infra.devstack.nats import EmbeddedNats
from infra.devstack.processes import wait_until
from infra.event_store import EventStore, open_event_store
from infra.fanout import Fanout
from infra.outbound import check_webhook_target
from infra.settings import Settings
from projections.event_feed import export_pages
from tests.e2e.conftest import Api
from tests.projection_support import (
    TeamFixture,
    connect,
    create_team,
    running_fanout,
    wait_caught_up,
)
from tests.webhook_receivers import Receiver, receiver

LOOPBACK = [ip_network("127.0.0.0/8")]
COMMANDS = 5_000
OUTAGE = 30.0
# A command that waited for NATS would wait for its connect or publish timeouts
# (seconds); these take milliseconds, allowing for a busy machine.
SLOWEST_COMMAND = 2.0


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A NATS server of this test's own, to stop and start."""
    server = EmbeddedNats(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api_settings(api_settings: Settings, own_nats: EmbeddedNats) -> Settings:
    return api_settings.model_copy(
        update={
            "nats_url": own_nats.url,
            "webhook_allowed_networks": LOOPBACK,
            "webhook_retry_schedule": [0.0, 0.5, 1.0, 1.0, 1.0, 1.0],
            "relay_ack_timeout": 2.0,
        }
    )


@pytest.fixture
def store(api_settings: Settings) -> Iterator[EventStore]:
    store = open_event_store(
        PostgresTarget.from_url(api_settings.database_url_value()), pool_size=4
    )
    yield store
    store.close()


def _register(store: EventStore, team: TeamFixture, url: str, types: list[str]) -> UUID:
    result = webhooks.register_webhook(
        store,
        CommandContext(actor=team.owner),
        RegisterWebhook(url=url, event_types=types, description="fault test"),
        url_guard=partial(check_webhook_target, allowed=LOOPBACK),
    )
    return UUID(result.data["id"])


def _expected(
    settings: Settings, team: TeamFixture, endpoint: UUID, types: set[str] | None
) -> set[str]:
    """The ids of the events the endpoint must get: its filter's, after its
    registration, not a private entry's (the feed as the owner sees it would
    include the owner's private entries, so those are excluded here). Both
    read models are waited on to reach the log's head first: a feed that
    trails the last command would leave its newest events out."""
    url = settings.database_url_value()
    for projection in ("webhooks", "event_feed"):
        wait_caught_up(url, projection, timeout=120)
    with connect(url) as conn:
        row = conn.execute(
            "SELECT created_position FROM reads.webhooks WHERE id = %s", (endpoint,)
        ).fetchone()
        assert row is not None
        private = {
            r[0]
            for r in conn.execute(
                "SELECT position FROM reads.public_events WHERE visible_to IS NOT NULL"
            ).fetchall()
        }
    docs = [
        doc
        for page in export_pages(partial(connect, url), team.team_id, team.owner.user_id, after=0)
        for doc in page
    ]
    return {
        d["id"]
        for d in docs
        if d["position"] > row[0]
        and d["position"] not in private
        and (types is None or d["type"] in types)
    }


def _assert_at_least_once_and_exact(got: Receiver, expected: set[str]) -> None:
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for request in got.received():
        bodies[request.webhook_id].add(request.body)
    assert set(bodies) == expected
    # A repeat is a redelivery: the same id always carries the same body.
    assert all(len(b) == 1 for b in bodies.values())


@dataclass(frozen=True)
class Sent:
    at: float  # monotonic, when sent
    seconds: float
    status: int


def _stream_commands(
    api: Api, team: TeamFixture, count: int, seconds: float, sent: list[Sent]
) -> None:
    """``count`` commands over HTTP paced over ``seconds``: creates, some
    private, and edits; each one's status and time kept in ``sent``."""
    path = f"/v1/teams/{team.team_id}/entries"
    created: list[str] = []
    start = time.monotonic()
    with api.client(team.owner_key, session=False) as client:
        for n in range(count):
            at = time.monotonic()
            if n % 5 == 4 and created:
                edited = f"{path}/{created[n % len(created)]}"
                response = client.patch(edited, json={"title": f"edit {n}"})
            else:
                visibility = "private" if n % 10 == 3 else "team"
                response = client.post(path, json={"title": f"entry {n}", "visibility": visibility})
                if response.status_code == 201:
                    created.append(response.json()["data"]["id"])
            sent.append(Sent(at, time.monotonic() - at, response.status_code))
            ahead = start + seconds * (n + 1) / count - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing the load, not synchronising


@pytest.mark.timeout(900)  # 30 s down inside 50 s of paced commands, then catching up
def test_nats_down_for_30_s_during_5000_commands_loses_nothing(
    api_settings: Settings, api: Api, store: EventStore, own_nats: EmbeddedNats
) -> None:
    team = create_team(store)
    # The relay runs on its own, so that it can be restarted during the
    # outage: what it published while NATS was down sat in its client's
    # reconnect buffer, which dies with it; only its position, advanced on
    # acknowledgements alone, says what to publish again.
    relay_parts = {"relay": True, "consumers": False, "deliveries": False, "emails": False}
    first_relay = Fanout(api_settings, store, **relay_parts)
    first_relay.start()
    with (
        running_fanout(api_settings, store, relay=False),
        receiver() as everything,
        receiver() as created_only,
    ):
        all_id = _register(store, team, everything.url, [])
        created_id = _register(store, team, created_only.url, ["entry.created"])
        failures: list[BaseException] = []
        sent: list[Sent] = []

        def write() -> None:
            try:
                _stream_commands(api, team, COMMANDS, OUTAGE + 20, sent)
            except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
                failures.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        wait_until(lambda: len(everything.ids()) >= 200, timeout=60, what="deliveries to start")
        own_nats.stop()
        stopped_at = time.monotonic()
        with connect(api_settings.database_url_value()) as conn:

            def relay_reports_the_outage() -> bool:
                row = conn.execute("SELECT last_error FROM relay_positions").fetchone()
                return row is not None and row[0] is not None

            wait_until(relay_reports_the_outage, timeout=20, what="the relay to report NATS down")
        first_relay.stop()
        second_relay = Fanout(api_settings, store, **relay_parts)
        second_relay.start()
        # Pacing the outage itself: NATS stays down for the whole 30 s.
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - stopped_at)))
        own_nats.start()
        restarted_at = time.monotonic()
        # Paced for 50 s; a machine busy with other tests may take longer.
        wait_until(lambda: not writer.is_alive(), timeout=400, what="the 5,000 commands")
        assert not failures, failures

        # Commands were unaffected: every one succeeded, and none sent while
        # NATS was down waited for it (they never touch NATS; the relay does).
        assert len(sent) == COMMANDS
        assert {s.status for s in sent} <= {200, 201}, Counter(s.status for s in sent)
        during = [s for s in sent if stopped_at <= s.at <= restarted_at]
        assert len(during) >= 100  # (paced at 100/s; a busy machine sends fewer)
        assert max(s.seconds for s in during) < SLOWEST_COMMAND, max(s.seconds for s in during)

        want_all = _expected(api_settings, team, all_id, None)
        want_created = _expected(api_settings, team, created_id, {"entry.created"})
        assert len(want_created) >= COMMANDS * 0.7
        wait_until(lambda: everything.ids() >= want_all, timeout=180, what="every event")
        wait_until(lambda: created_only.ids() >= want_created, timeout=60, what="every create")
        _assert_at_least_once_and_exact(everything, want_all)
        _assert_at_least_once_and_exact(created_only, want_created)
    second_relay.stop()


def _worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CHRONIK_DATABASE_URL": settings.database_url_value(),
        "CHRONIK_NATS_URL": settings.nats_url or "",
        "CHRONIK_NATS_NAMESPACE": settings.nats_namespace,
        "CHRONIK_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "CHRONIK_WEBHOOK_RETRY_SCHEDULE": "0,0.5,1,1,1,1",
        "CHRONIK_WEBHOOK_TIMEOUT": "3",
        "CHRONIK_WEBHOOK_CLAIM_LEASE": "4",
        "CHRONIK_PROJECTION_POLL_INTERVAL": "0.2",
        "CHRONIK_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "worker"], env=env, stdout=subprocess.DEVNULL
    )


def test_a_worker_killed_mid_burst_loses_no_delivery(
    api_settings: Settings, store: EventStore
) -> None:
    team = create_team(store)
    ctx = CommandContext(actor=team.owner)
    # Slow answers keep many sends in flight when the worker dies.
    with receiver(delay=0.2) as slow:
        endpoint = _register(store, team, slow.url, ["entry.created"])
        for n in range(600):
            entries.create_entry(store, ctx, CreateEntry(title=f"burst {n}"))
        first = _worker(api_settings)
        try:
            wait_until(lambda: len(slow.ids()) >= 150, timeout=120, what="deliveries to start")
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
            in_flight_at_kill = len(slow.ids())
        finally:
            if first.poll() is None:
                first.kill()
        second = _worker(api_settings)
        try:
            expected = _expected(api_settings, team, endpoint, {"entry.created"})
            assert len(expected) == 600
            assert in_flight_at_kill < len(expected)
            wait_until(lambda: slow.ids() >= expected, timeout=120, what="every delivery")
            _assert_at_least_once_and_exact(slow, expected)
            with connect(api_settings.database_url_value()) as conn:

                def statuses() -> dict[str, Any]:
                    query = "SELECT status, count(*) FROM webhook_deliveries GROUP BY status"
                    return dict(conn.execute(query).fetchall())

                wait_until(lambda: statuses() == {"succeeded": 600}, timeout=30, what="all done")
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
