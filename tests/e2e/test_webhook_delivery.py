"""Webhooks end to end: commands over HTTP, the relay through real NATS, the
consumer and the delivery worker, real receivers on loopback."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import pytest

from infra.devstack.processes import wait_until
from infra.settings import Settings
from tests.e2e.conftest import Api
from tests.webhook_receivers import receiver


@pytest.fixture
def api_settings(api_settings: Settings) -> Settings:
    """Receivers run on loopback; retries are compressed to fractions of a second."""
    return api_settings.model_copy(
        update={
            "webhook_allowed_networks": [ip_network("127.0.0.0/8")],
            "webhook_retry_schedule": [0.0, 0.2, 0.2, 0.2, 0.2],
            "webhook_timeout": 5.0,
            "webhook_claim_lease": 10.0,
        }
    )


def _register(api: Api, team: dict[str, Any], url: str, types: list[str] | None = None) -> str:
    owner = api.client(team["owner_key"])
    body = {"url": url, "event_types": types or [], "description": "test receiver"}
    response = owner.post(f"/v1/teams/{team['id']}/webhooks", json=body)
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    secret: str = data["secret"]
    assert secret.startswith("whsec_")
    return f"{data['id']} {secret}"


def _write(api: Api, team: dict[str, Any], title: str, **fields: Any) -> dict[str, Any]:
    owner = api.client(team["owner_key"])
    response = owner.post(f"/v1/teams/{team['id']}/entries", json={"title": title, **fields})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def _feed(api: Api, team: dict[str, Any], types: str) -> list[dict[str, Any]]:
    owner = api.client(team["owner_key"])
    response = owner.get(f"/v1/teams/{team['id']}/events", params={"types": types, "limit": 1000})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]
    return events


@pytest.mark.usefixtures("fanout")
def test_every_matching_event_reaches_its_endpoint_signed(api: Api) -> None:
    team = api.create_team()
    with receiver() as everything, receiver() as created_only:
        all_id, all_secret = _register(api, team, everything.url).split()
        _, created_secret = _register(api, team, created_only.url, ["entry.created"]).split()
        first = _write(api, team, "shared", visibility="team")
        private = _write(api, team, "mine", visibility="private")
        owner = api.client(team["owner_key"])
        edited = owner.patch(
            f"/v1/teams/{team['id']}/entries/{first['id']}", json={"title": "shared, edited"}
        )
        assert edited.status_code == 200, edited.text

        wanted = {
            e["id"]
            for e in _feed(api, team, "entry.created,entry.edited,webhook.registered")
            # An endpoint never gets its own registration, nor a private entry's events.
            if e["aggregate_id"] not in (all_id, private["id"])
        }
        wait_until(lambda: everything.ids() >= wanted, timeout=30, what="every event")
        wait_until(lambda: len(created_only.ids()) >= 1, timeout=30, what="entry.created")

        docs = everything.verified_docs(all_secret)
        assert {d["id"] for d in docs} == wanted
        assert private["id"] not in {d["aggregate_id"] for d in docs}
        created_docs = created_only.verified_docs(created_secret)
        assert [d["type"] for d in created_docs] == ["entry.created"]
        assert created_docs[0]["aggregate_id"] == first["id"]
        for request in everything.received():
            assert request.webhook_id == request.doc["id"]
            assert request.doc["team_id"] == team["id"]


@pytest.mark.usefixtures("fanout")
def test_a_receiver_failing_three_times_gets_the_fourth_with_the_same_id(api: Api) -> None:
    team = api.create_team()
    with receiver(fail_first=3) as flaky:
        endpoint_id, secret = _register(api, team, flaky.url, ["entry.created"]).split()
        entry = _write(api, team, "retried")
        wait_until(lambda: len(flaky.received()) >= 4, timeout=30, what="four attempts")
        requests = flaky.received()
        assert len({r.webhook_id for r in requests}) == 1
        assert [r.doc["aggregate_id"] for r in requests] == [entry["id"]] * 4
        assert len({r.body for r in requests}) == 1  # the same bytes every time
        assert len(flaky.verified_docs(secret)) == 4

        owner = api.client(team["owner_key"])
        base = f"/v1/teams/{team['id']}/webhooks/{endpoint_id}"

        def delivered() -> bool:
            listed = owner.get(f"{base}/deliveries").json()["data"]
            return bool(listed) and listed[0]["status"] == "succeeded"

        wait_until(delivered, timeout=10, what="the delivery to be recorded as succeeded")
        (delivery,) = owner.get(f"{base}/deliveries").json()["data"]
        detail = owner.get(f"{base}/deliveries/{delivery['id']}").json()["data"]
        codes = [a["status_code"] for a in detail["attempts_log"]]
        assert codes == [500, 500, 500, 204]


@pytest.mark.usefixtures("fanout")
def test_a_410_disables_the_endpoint_and_records_webhook_disabled(api: Api) -> None:
    team = api.create_team()
    with receiver(status=410) as gone:
        endpoint_id, _ = _register(api, team, gone.url).split()
        _write(api, team, "to a receiver that is gone")
        owner = api.client(team["owner_key"])

        def disabled() -> bool:
            events = _feed(api, team, "webhook.disabled")
            return any(e["aggregate_id"] == endpoint_id for e in events)

        wait_until(disabled, timeout=30, what="webhook.disabled")
        (event,) = _feed(api, team, "webhook.disabled")
        assert "410" in event["data"]["reason"]
        assert event["actor"] is None  # Chronik did it, not a member
        # The worker wrote the event, not this session: read at its position.
        endpoint = owner.get(
            f"/v1/teams/{team['id']}/webhooks/{endpoint_id}",
            params={"min_position": event["position"]},
        ).json()["data"]
        assert endpoint["enabled"] is False
        assert len(gone.received()) == 1


@pytest.mark.usefixtures("fanout")
def test_relay_and_backlog_show_in_metrics_and_readiness(api: Api) -> None:
    team = api.create_team()
    with receiver(status=503) as down:
        _register(api, team, down.url, ["entry.created"])
        _write(api, team, "waits for a receiver that is down")
        plain = api.client(session=False)

        def metric(name: str) -> float | None:
            for line in plain.get("/metrics").text.splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
            return None

        wait_until(lambda: metric("chronik_relay_lag") == 0, timeout=30, what="relay caught up")

        def given_up() -> bool:  # every attempt of the schedule failed
            return (
                metric("chronik_webhook_endpoints_failing") == 1
                and metric("chronik_webhook_deliveries_pending") == 0
            )

        wait_until(given_up, timeout=30, what="the delivery to fail for good")
        assert len(down.received()) == 5  # one attempt per step of the schedule
        published = metric("chronik_relay_published_events_total")
        assert published is not None
        assert published >= 3
        fanout = plain.get("/readyz").json()["fanout"]
        assert fanout["relay"] == {"position": fanout["relay"]["position"], "lag": 0,
                                   "error": None, "error_at": None}  # fmt: skip
        assert fanout["webhooks"]["pending"] == 0
        assert fanout["webhooks"]["endpoints_failing"] == 1
