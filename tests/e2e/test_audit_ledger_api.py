"""The hash chain over HTTP: who may read it, what verify and head report, and
how an auditor checks a head copied out of the system earlier."""

from __future__ import annotations

from typing import Any

import pytest

from infra.settings import Settings, load_settings
from tests.e2e.conftest import OPERATOR_TOKEN, Api
from tests.projection_support import connect, wait_caught_up

KEYS = "k1:" + "s" * 40


@pytest.fixture
def api_settings(api_settings: Settings) -> Settings:
    return api_settings.model_copy(
        update={
            "audit_signing_keys": load_settings(audit_signing_keys=KEYS).audit_signing_keys,
            "audit_checkpoint_every": 4,
            "audit_verify_max_events": 10,
        }
    )


def _key(api: Api, team: dict[str, Any], role: str) -> str:
    owner = api.client(team["owner_key"])
    base = f"/v1/teams/{team['id']}"
    added = owner.post(
        f"{base}/members", json={"email": f"{role}@example.com", "display_name": role, "role": role}
    )
    assert added.status_code == 201, added.text
    issued = owner.post(
        f"{base}/api-keys", json={"user_id": added.json()["data"]["user_id"], "name": role}
    )
    assert issued.status_code == 201, issued.text
    key: str = issued.json()["data"]["key"]
    return key


def _write(api: Api, team: dict[str, Any], count: int) -> None:
    with api.client(team["owner_key"]) as owner:
        for n in range(count):
            created = owner.post(f"/v1/teams/{team['id']}/entries", json={"title": f"e{n}"})
            assert created.status_code == 201, created.text


def _verified(api: Api, key: str, **params: Any) -> dict[str, Any]:
    with api.client(key) as client:
        response = client.get("/v1/audit/verify", params=params)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def test_owners_auditors_and_the_operator_read_the_chain_members_do_not(
    api: Api, api_settings: Settings
) -> None:
    team = api.create_team()
    auditor, member = _key(api, team, "auditor"), _key(api, team, "member")
    _write(api, team, 3)
    wait_caught_up(api_settings.database_url_value(), "audit_ledger")
    for key in (team["owner_key"], auditor, OPERATOR_TOKEN):
        with api.client(key) as client:
            assert client.get("/v1/audit/head").status_code == 200
            assert client.get("/v1/audit/verify").status_code == 200
    with api.client(member) as client:
        for path in ("/v1/audit/head", "/v1/audit/verify"):
            refused = client.get(path)
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "FORBIDDEN"
    with api.client() as anonymous:
        assert anonymous.get("/v1/audit/head").status_code == 401
    with api.client("chk_nope_nope") as stranger:
        assert stranger.get("/v1/audit/verify").status_code == 401


def test_verify_walks_the_log_in_capped_steps_and_agrees_with_the_head(
    api: Api, api_settings: Settings
) -> None:
    team = api.create_team()
    _write(api, team, 8)
    wait_caught_up(api_settings.database_url_value(), "audit_ledger")
    with api.client(team["owner_key"]) as owner:
        head = owner.get("/v1/audit/head").json()["data"]
    assert head["unchained_events"] == 0
    checkpoint = head["checkpoint"]
    assert checkpoint["key_id"] == "k1"
    assert checkpoint["count"] == head["head_count"] // 4 * 4
    steps: list[dict[str, Any]] = []
    params: dict[str, Any] = {}
    while True:
        step = _verified(api, team["owner_key"], **params)
        assert step["ok"], step
        assert step["signatures_checked"]
        steps.append(step)
        if not step["truncated"]:
            break
        params = {"from": step["next_from"]}
    assert sum(s["checked"] for s in steps) == head["head_count"]
    assert all(s["checked"] == 10 for s in steps[:-1])
    assert steps[-1]["last_hash"] == head["head_hash"]
    # An auditor's copy of a checkpoint: the chain recomputed up to it still matches.
    at = checkpoint["position"]
    upto = _verified(api, team["owner_key"], **{"from": at, "to": at})
    assert (upto["checked"], upto["last_hash"]) == (1, checkpoint["chain_hash"])


def test_verify_names_the_first_changed_position(api: Api, api_settings: Settings) -> None:
    team = api.create_team()
    _write(api, team, 3)
    url = api_settings.database_url_value()
    wait_caught_up(url, "audit_ledger")
    with connect(url) as conn:
        row = conn.execute("SELECT min(notification_id) + 2 FROM chronik_events").fetchone()
        assert row is not None
        conn.execute(
            "UPDATE chronik_events SET state = state || '\\x20'::bytea WHERE notification_id = %s",
            (row[0],),
        )
    report = _verified(api, team["owner_key"])
    assert (report["ok"], report["first_bad_position"], report["problem"]) == (
        False,
        row[0],
        "changed",
    )


def test_a_range_backwards_is_a_validation_error(api: Api) -> None:
    team = api.create_team()
    with api.client(team["owner_key"]) as owner:
        refused = owner.get("/v1/audit/verify", params={"from": 10, "to": 3})
        negative = owner.get("/v1/audit/verify", params={"from": -1})
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "VALIDATION_ERROR"
    assert negative.status_code == 422
