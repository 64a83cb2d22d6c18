"""Sync over HTTP: pull pages, revocations, push with per-mutation results."""

from __future__ import annotations

import threading
from typing import Any
from uuid import uuid4

import httpx

from tests.e2e.conftest import Api


def _add_member(api: Api, team: dict[str, Any], email: str) -> tuple[str, str]:
    owner = api.client(team["owner_key"])
    base = f"/v1/teams/{team['id']}"
    user = owner.post(
        f"{base}/members", json={"email": email, "display_name": "M", "role": "member"}
    ).json()["data"]["user_id"]
    key = owner.post(f"{base}/api-keys", json={"user_id": user, "name": "k"}).json()["data"]["key"]
    return user, key


def _pull_all(
    client: httpx.Client, url: str, cursor: str | None = None, *, min_position: int = 0
) -> tuple[list[Any], str]:
    changes: list[Any] = []
    while True:
        params: dict[str, Any] = {"limit": 2, "min_position": min_position}
        if cursor:
            params["cursor"] = cursor
        page = client.get(url, params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        changes += body["changes"]
        cursor = body["cursor"]
        if not body["has_more"]:
            return changes, cursor


def test_a_member_syncs_and_loses_an_entry_made_private(api: Api) -> None:
    team = api.create_team()
    _, member_key = _add_member(api, team, "m@example.com")
    owner, member = api.client(team["owner_key"]), api.client(member_key)
    entries, sync = f"/v1/teams/{team['id']}/entries", f"/v1/teams/{team['id']}/sync"
    shared = owner.post(entries, json={"title": "shared", "body": "secret later"}).json()["data"]
    owner.post(entries, json={"title": "mine", "visibility": "private"})

    full, cursor = _pull_all(member, sync)
    titles = {c["data"]["title"] for c in full if c["entity"] == "entry"}
    assert titles == {"shared"}
    assert {c["entity"] for c in full} == {"entry", "member"}

    owner.patch(f"{entries}/{shared['id']}", json={"visibility": "private"})
    owner.patch(f"{entries}/{shared['id']}", json={"body": "even more secret"})
    delta, _ = _pull_all(member, sync, cursor)
    entry_changes = [c for c in delta if c["entity"] == "entry"]
    assert entry_changes == [
        {
            "entity": "entry", "id": shared["id"], "op": "delete", "reason": "revoked",
            "version": 2, "position": entry_changes[0]["position"], "data": None,
        }
    ]  # fmt: skip
    assert "secret" not in str(delta)
    owner_view, _ = _pull_all(owner, sync)
    bodies = {c["data"]["body"] for c in owner_view if c["entity"] == "entry"}
    assert "even more secret" in bodies


def test_garbage_cursors_and_limits_get_the_envelope(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    sync = f"/v1/teams/{team['id']}/sync"
    assert owner.get(sync, params={"cursor": "zzz"}).json()["error"]["code"] == "MALFORMED"
    assert owner.get(sync, params={"limit": 0}).status_code == 422
    assert owner.get(sync, params={"limit": 1001}).status_code == 422
    other = api.create_team(name="Other")
    assert api.client(other["owner_key"]).get(sync).status_code == 404


def test_push_applies_in_order_reports_failures_and_is_idempotent(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    base = f"/v1/teams/{team['id']}"
    entry_id = str(uuid4())
    mutations = [
        {"id": "m1", "name": "entry.create", "args": {"id": entry_id, "title": "offline"}},
        {"id": "m2", "name": "entry.edit", "args": {"id": str(uuid4()), "title": "nobody"}},
        {"id": "m3", "name": "entry.edit", "args": {"id": entry_id, "title": "edited"}},
        {"id": "m4", "name": "entry.create", "args": {"title": ""}},
        {"id": "m5", "name": "entry.edit", "args": {"id": entry_id}, "base_version": 1},
    ]
    pushed = owner.post(f"{base}/sync/push", json={"mutations": mutations})
    assert pushed.status_code == 200, pushed.text
    body = pushed.json()
    statuses = [(r["id"], r["status"]) for r in body["results"]]
    assert statuses == [
        ("m1", "applied"), ("m2", "failed"), ("m3", "applied"), ("m4", "failed"),
        ("m5", "failed"),
    ]  # fmt: skip
    errors = {r["id"]: r["error"]["code"] for r in body["results"] if r["status"] == "failed"}
    assert errors == {"m2": "NOT_FOUND", "m4": "VALIDATION_ERROR", "m5": "VERSION_CONFLICT"}
    assert body["position"] == body["results"][2]["position"]

    read = owner.get(f"{base}/entries/{entry_id}", params={"min_position": body["position"]})
    assert read.json()["data"]["title"] == "edited"

    again = owner.post(f"{base}/sync/push", json={"mutations": mutations[:1]}).json()
    assert again["results"][0]["status"] == "applied"
    assert again["results"][0]["replayed"] is True
    assert again["results"][0]["position"] == body["results"][0]["position"]
    listed = owner.get(f"{base}/entries", params={"min_position": body["position"]}).json()
    assert len(listed["data"]) == 1


def test_push_refuses_what_cannot_be_a_batch(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    push = f"/v1/teams/{team['id']}/sync/push"
    too_many = [{"id": f"m{n}", "name": "entry.delete", "args": {}} for n in range(101)]
    bodies: list[dict[str, Any]] = [
        {"mutations": []},
        {"mutations": too_many},
        {"mutations": [{"id": "x"}]},
    ]
    for body in bodies:
        response = owner.post(push, json=body)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"


def test_a_pull_with_wait_returns_when_a_change_arrives(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"], session=False)
    sync = f"/v1/teams/{team['id']}/sync"
    # No session: the first pull waits for the team's creation itself.
    _, cursor = _pull_all(owner, sync, min_position=api.last_position[0])
    answers: list[dict[str, Any]] = []

    def long_poll() -> None:
        response = owner.get(sync, params={"cursor": cursor, "wait": 30})
        answers.append(response.json())

    poller = threading.Thread(target=long_poll)
    poller.start()
    owner.post(f"/v1/teams/{team['id']}/entries", json={"title": "news"})
    poller.join(timeout=40)
    changes = answers[0]["changes"]
    assert [c["data"]["title"] for c in changes if c["entity"] == "entry"] == ["news"]
