"""The webhook deliveries API over HTTP: lists, one delivery, attempts, resend,
recovery and health, who may call them, and how they refuse.

The delivery worker is built separately: delivery and attempt rows are
inserted with SQL, as the worker would leave them, for an endpoint registered
over HTTP (hooks.example.com does not resolve here, and is accepted).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from infra.settings import Settings
from tests.e2e.conftest import Api
from tests.e2e.test_reads import add_member, walk

Conn = psycopg.Connection[Any]

ITEM_FIELDS = {
    "id", "event_id", "event_type", "position", "status", "attempts", "total_attempts",
    "last_status_code", "last_error", "next_attempt_at", "created_at", "updated_at",
    "delivered_at",
}  # fmt: skip
ATTEMPT_FIELDS = {
    "attempt",
    "started_at",
    "duration_ms",
    "status_code",
    "error",
    "response_excerpt",
}

INSERT_DELIVERY = """
INSERT INTO webhook_deliveries (team_id, endpoint_id, position, event_id, event_type, body,
    status, attempts, round_start, next_attempt_at, last_status_code, last_error, created_at)
VALUES (%(team_id)s, %(endpoint_id)s, %(position)s, %(event_id)s, %(event_type)s, %(body)s,
    %(status)s, %(attempts)s, 0, %(next_attempt_at)s, %(last_status_code)s, %(last_error)s,
    %(created_at)s)
RETURNING id
"""
INSERT_ATTEMPT = """
INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, status_code, error,
    response_excerpt)
VALUES (%s, %s, now(), %s, %s, %s, %s)
"""


@dataclass
class Hook:
    """An endpoint registered over HTTP, and rows for it written as the worker would."""

    db: Conn
    team_id: str
    id: str
    url: str  # /v1/teams/{t}/webhooks/{id}
    next_position: int = 1

    def delivery(
        self, status: str = "failed", *, attempts: int = 0, age: timedelta = timedelta(0)
    ) -> int:
        position = self.next_position
        self.next_position += 1
        body = {"id": f"evt_{position}", "type": "entry.created", "position": position}
        row = self.db.execute(
            INSERT_DELIVERY,
            {
                "team_id": self.team_id,
                "endpoint_id": self.id,
                "position": position,
                "event_id": f"evt_{position}",
                "event_type": "entry.created",
                "body": orjson.dumps(body).decode(),
                "status": status,
                "attempts": attempts,
                "next_attempt_at": datetime.now(UTC) if status == "pending" else None,
                "last_status_code": 500 if attempts else None,
                "last_error": "HTTP 500" if attempts else None,
                "created_at": datetime.now(UTC) - age,
            },
        ).fetchone()
        assert row is not None
        delivery_id: int = row[0]
        for n in range(1, attempts + 1):
            self.db.execute(INSERT_ATTEMPT, (delivery_id, n, 10 * n, 500, None, "oops"))
        return delivery_id


@pytest.fixture
def db(api_settings: Settings) -> Iterator[Conn]:
    with psycopg.connect(api_settings.database_url_value(), autocommit=True) as conn:
        yield conn


def register(api: Api, db: Conn, team: dict[str, Any]) -> Hook:
    owner = api.client(team["owner_key"])
    created = owner.post(
        f"/v1/teams/{team['id']}/webhooks",
        json={"url": f"https://hooks.example.com/{uuid.uuid4().hex[:8]}"},
    )
    assert created.status_code == 201, created.text
    hook_id = created.json()["data"]["id"]
    return Hook(db, team["id"], hook_id, f"/v1/teams/{team['id']}/webhooks/{hook_id}")


def error_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error", "request_id"}, body
    return response.status_code, body["error"]["code"]


def test_deliveries_read_resend_recover_and_health(api: Api, db: Conn) -> None:
    team = api.create_team()
    hook = register(api, db, team)
    owner = api.client(team["owner_key"])
    _, admin_key = add_member(api, team, "admin")
    admin = api.client(admin_key)
    failed = hook.delivery("failed", attempts=3, age=timedelta(hours=2))
    canceled = hook.delivery("canceled", attempts=1, age=timedelta(hours=1))
    succeeded = hook.delivery("succeeded", attempts=1)
    pending = hook.delivery("pending")

    pages = walk(admin, f"{hook.url}/deliveries", limit=3)
    assert [[d["id"] for d in page] for page in pages] == [[pending, succeeded, canceled], [failed]]
    items = {d["id"]: d for page in pages for d in page}
    assert all(set(d) == ITEM_FIELDS for d in items.values())
    assert (items[failed]["status"], items[failed]["attempts"]) == ("failed", 3)
    assert items[failed]["next_attempt_at"] is None
    assert items[pending]["next_attempt_at"] is not None
    assert items[failed]["event_id"] == f"evt_{items[failed]['position']}"

    only = owner.get(f"{hook.url}/deliveries", params={"status": "failed,canceled"})
    assert [d["id"] for d in only.json()["data"]] == [canceled, failed]
    recent = owner.get(
        f"{hook.url}/deliveries",
        params={"since": (datetime.now(UTC) - timedelta(minutes=90)).isoformat()},
    )
    assert [d["id"] for d in recent.json()["data"]] == [pending, succeeded, canceled]

    one = owner.get(f"{hook.url}/deliveries/{failed}")
    assert one.status_code == 200, one.text
    data = one.json()["data"]
    assert set(data) == ITEM_FIELDS | {"payload", "attempts_log"}
    assert data["payload"] == {"id": data["event_id"], "type": "entry.created", "position": 1}
    assert [a["attempt"] for a in data["attempts_log"]] == [1, 2, 3]
    assert all(set(a) == ATTEMPT_FIELDS for a in data["attempts_log"])
    attempts = walk(owner, f"{hook.url}/deliveries/{failed}/attempts", limit=2)
    assert [[a["attempt"] for a in page] for page in attempts] == [[1, 2], [3]]

    resent = owner.post(f"{hook.url}/deliveries/{succeeded}/resend")
    assert resent.status_code == 202, resent.text
    item = resent.json()["data"]
    assert set(item) == ITEM_FIELDS
    assert (item["id"], item["status"], item["attempts"], item["total_attempts"]) == (
        succeeded,
        "pending",
        0,
        1,
    )
    assert item["next_attempt_at"] is not None

    since = datetime.now(UTC) - timedelta(minutes=90)
    recovered = admin.post(f"{hook.url}/recover", json={"since": since.isoformat()})
    assert recovered.status_code == 202, recovered.text
    assert recovered.json() == {"data": {"requeued": 1, "since": since.isoformat()}}
    statuses = {d["id"]: d["status"] for d in owner.get(f"{hook.url}/deliveries").json()["data"]}
    assert statuses == {
        pending: "pending",
        succeeded: "pending",
        canceled: "pending",
        failed: "failed",  # created before since
    }

    health = owner.get(f"{hook.url}/health", params={"window_hours": 3})
    assert health.status_code == 200, health.text
    summary = health.json()["data"]
    assert set(summary) == {
        "webhook_id", "enabled", "failing_since", "consecutive_failures", "last_success_at",
        "last_failure_at", "window", "deliveries", "attempts", "backlog",
    }  # fmt: skip
    assert (summary["webhook_id"], summary["enabled"]) == (hook.id, True)
    assert summary["consecutive_failures"] == 0
    assert summary["deliveries"] == {"pending": 3, "succeeded": 0, "failed": 1, "canceled": 0}
    assert summary["attempts"]["count"] == 5
    assert summary["attempts"]["success_rate"] == 0.0
    assert summary["backlog"]["pending"] == 3


def test_only_managers_of_the_team_reach_deliveries(api: Api, db: Conn) -> None:
    team = api.create_team()
    hook = register(api, db, team)
    delivery = hook.delivery("failed", attempts=1)
    since = {"since": datetime.now(UTC).isoformat()}

    def calls(client: httpx.Client, url: str, delivery_id: int) -> list[httpx.Response]:
        return [
            client.get(f"{url}/deliveries"),
            client.get(f"{url}/deliveries/{delivery_id}"),
            client.get(f"{url}/deliveries/{delivery_id}/attempts"),
            client.post(f"{url}/deliveries/{delivery_id}/resend"),
            client.post(f"{url}/recover", json=since),
            client.get(f"{url}/health"),
        ]

    for role in ("member", "auditor"):
        _, key = add_member(api, team, role)
        refused = calls(api.client(key), hook.url, delivery)
        assert [error_of(r) for r in refused] == [(403, "FORBIDDEN")] * 6

    # Another team: our URLs, and their own team's URL with our ids.
    other = api.create_team(name="Other")
    outsider = api.client(other["owner_key"])
    for url in (hook.url, f"/v1/teams/{other['id']}/webhooks/{hook.id}"):
        assert [error_of(r) for r in calls(outsider, url, delivery)] == [(404, "NOT_FOUND")] * 6

    # A delivery of another endpoint of the same team, and one that does not exist.
    owner = api.client(team["owner_key"])
    second = register(api, db, team)
    second.next_position = 100
    theirs = second.delivery("failed")
    for delivery_id in (theirs, 10**12):
        refused = [
            owner.get(f"{hook.url}/deliveries/{delivery_id}"),
            owner.get(f"{hook.url}/deliveries/{delivery_id}/attempts"),
            owner.post(f"{hook.url}/deliveries/{delivery_id}/resend"),
        ]
        assert [error_of(r) for r in refused] == [(404, "NOT_FOUND")] * 3
    listed = owner.get(f"{hook.url}/deliveries").json()["data"]
    assert [d["id"] for d in listed] == [delivery]
    # And recovering this endpoint leaves the other one's deliveries alone.
    assert owner.post(f"{hook.url}/recover", json=since).json()["data"]["requeued"] == 0
    assert owner.get(f"{second.url}/deliveries/{theirs}").json()["data"]["status"] == "failed"


def test_a_disabled_endpoint_refuses_resend_and_recovery(api: Api, db: Conn) -> None:
    team = api.create_team()
    hook = register(api, db, team)
    owner = api.client(team["owner_key"])
    delivery = hook.delivery("failed", attempts=8)
    disabled = owner.post(f"{hook.url}/disable")
    assert disabled.status_code == 200, disabled.text
    # Read-your-writes: the refusal is decided on the endpoint as disabled.
    fresh = {"Chronik-Min-Position": disabled.headers["Chronik-Position"]}
    since = {"since": (datetime.now(UTC) - timedelta(days=1)).isoformat()}

    refused = [
        owner.post(f"{hook.url}/deliveries/{delivery}/resend", headers=fresh),
        owner.post(f"{hook.url}/recover", json=since, headers=fresh),
    ]
    assert [error_of(r) for r in refused] == [(409, "WEBHOOK_DISABLED")] * 2
    assert refused[0].json()["error"]["details"]["webhook_id"] == hook.id
    missing = owner.post(f"{hook.url}/deliveries/{10**12}/resend", headers=fresh)
    assert error_of(missing) == (404, "NOT_FOUND")
    # Reads still answer, and nothing was requeued.
    assert owner.get(f"{hook.url}/deliveries/{delivery}").json()["data"]["status"] == "failed"
    assert owner.get(f"{hook.url}/health").json()["data"]["enabled"] is False

    enabled = owner.post(f"{hook.url}/enable")
    fresh = {"Chronik-Min-Position": enabled.headers["Chronik-Position"]}
    resent = owner.post(f"{hook.url}/deliveries/{delivery}/resend", headers=fresh)
    assert resent.status_code == 202, resent.text
    assert (resent.json()["data"]["status"], resent.json()["data"]["attempts"]) == ("pending", 0)


def test_bad_parameters_answer_with_the_envelope(api: Api, db: Conn) -> None:
    team = api.create_team()
    hook = register(api, db, team)
    owner = api.client(team["owner_key"])
    hook.delivery()
    deliveries = f"{hook.url}/deliveries"
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()

    invalid = {
        "status": owner.get(deliveries, params={"status": "failed,delivered"}),
        "event_type": owner.get(deliveries, params={"event_type": "entry.create"}),
        "since": owner.get(deliveries, params={"since": "yesterday"}),
        "naive since": owner.get(deliveries, params={"since": "2025-01-01T00:00:00"}),
        "until before since": owner.get(
            deliveries, params={"since": "2025-01-02T00:00:00Z", "until": "2025-01-01T00:00:00Z"}
        ),
        "limit": owner.get(deliveries, params={"limit": 0}),
        "delivery id": owner.get(f"{deliveries}/0"),
        "window": owner.get(f"{hook.url}/health", params={"window_hours": 169}),
        "recover naive": owner.post(f"{hook.url}/recover", json={"since": "2025-01-01T00:00:00"}),
        "recover future": owner.post(f"{hook.url}/recover", json={"since": future}),
        "recover extra": owner.post(
            f"{hook.url}/recover", json={"since": "2025-01-01T00:00:00Z", "all": True}
        ),
        "recover missing": owner.post(f"{hook.url}/recover", json={}),
    }
    for what, response in invalid.items():
        assert error_of(response) == (422, "VALIDATION_ERROR"), what
        fields = response.json()["error"]["details"]["fields"]
        assert fields, what
        assert all({"field", "message", "type"} <= set(f) for f in fields), what
    assert invalid["status"].json()["error"]["details"]["unknown"] == ["delivered"]
    assert invalid["status"].json()["error"]["details"]["fields"][0]["field"] == "query.status"

    for cursor in ("not-a-cursor", "W10"):  # W10 is "[]": valid base64 JSON, not ours
        response = owner.get(deliveries, params={"cursor": cursor})
        assert error_of(response) == (400, "MALFORMED")
        assert response.json()["error"]["details"] == {"field": "cursor"}
    not_json = owner.post(
        f"{hook.url}/recover", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert error_of(not_json) == (400, "MALFORMED")
