"""Reads from the teams, prompts, webhooks and quotas read models over HTTP.

The api fixture's clients send Chronik-Min-Position, so each read below sees
the writes made before it without any waiting in the tests themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from aggregates.base import EventMetadata
from aggregates.quota import MonthlyQuota
from infra.db import PostgresTarget
from infra.event_store import open_event_store
from infra.settings import Settings
from tests.e2e.conftest import Api

KEY_FIELDS = {"key_id", "user_id", "name", "created_at", "revoked_at", "revoke_reason"}
MEMBER_FIELDS = {"user_id", "email", "display_name", "role", "joined_at"}
SaveQuota = Callable[[str, str, int], int]


def add_member(api: Api, team: dict[str, Any], role: str, name: str = "") -> tuple[str, str]:
    """A new member of ``role``: (user id, their key)."""
    owner = api.client(team["owner_key"])
    name = name or f"{role}-{uuid.uuid4().hex[:6]}"
    added = owner.post(
        f"/v1/teams/{team['id']}/members",
        json={"email": f"{name}@example.com", "display_name": name, "role": role},
    )
    assert added.status_code == 201, added.text
    user_id: str = added.json()["data"]["user_id"]
    key = owner.post(f"/v1/teams/{team['id']}/api-keys", json={"user_id": user_id, "name": name})
    assert key.status_code == 201, key.text
    return user_id, key.json()["data"]["key"]


def key_id_of(token: str) -> str:
    return token.split("_")[1]


def walk(client: httpx.Client, url: str, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of a list, following next_cursor."""
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        response = client.get(url, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"data", "next_cursor"}
        pages.append(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def test_the_team_reads_as_its_commands_answer(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    add_member(api, team, "admin", "ana")
    updated = owner.patch(f"/v1/teams/{team['id']}", json={"name": "Renamed"})
    assert updated.status_code == 200, updated.text
    read = owner.get(f"/v1/teams/{team['id']}")
    assert read.status_code == 200
    assert read.json()["data"] == updated.json()["data"]
    assert read.headers["etag"] == updated.headers["etag"] == f'"{read.json()["data"]["version"]}"'
    assert [m["display_name"] for m in read.json()["data"]["members"]] == ["o", "ana"]


def test_members_page_in_the_order_they_joined(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    names = ["ana", "ben", "cid"]
    ids = [add_member(api, team, "member", name)[0] for name in names]
    pages = walk(owner, f"/v1/teams/{team['id']}/members", limit=2)
    assert [[m["display_name"] for m in page] for page in pages] == [["o", "ana"], ["ben", "cid"]]
    assert all(set(m) == MEMBER_FIELDS for page in pages for m in page)

    ben = owner.get(f"/v1/teams/{team['id']}/members/{ids[1]}")
    assert ben.status_code == 200
    assert ben.json()["data"]["email"] == "ben@example.com"
    # A member's ETag is the team's version: member commands check If-Match against it.
    assert ben.headers["etag"] == owner.get(f"/v1/teams/{team['id']}").headers["etag"]
    assert owner.delete(f"/v1/teams/{team['id']}/members/{ids[1]}").status_code == 200
    gone = owner.get(f"/v1/teams/{team['id']}/members/{ids[1]}")
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "NOT_FOUND")


def test_managers_see_every_key_and_members_only_their_own(api: Api) -> None:
    team = api.create_team()
    t = team["id"]
    owner = api.client(team["owner_key"])
    _, admin_key = add_member(api, team, "admin")
    _, member_key = add_member(api, team, "member")
    _, leaver_key = add_member(api, team, "member")
    member = api.client(member_key)
    assert owner.delete(f"/v1/teams/{t}/api-keys/{key_id_of(leaver_key)}").status_code == 200

    everything = walk(api.client(admin_key), f"/v1/teams/{t}/api-keys", limit=3)
    assert [len(page) for page in everything] == [3, 1]
    keys = {k["key_id"]: k for page in everything for k in page}
    everyone = (team["owner_key"], admin_key, member_key, leaver_key)
    assert list(keys) == [key_id_of(k) for k in everyone]  # oldest first
    assert all(set(k) == KEY_FIELDS for k in keys.values())
    revoked = keys[key_id_of(leaver_key)]
    assert (revoked["revoke_reason"], revoked["revoked_at"] is not None) == ("revoked", True)

    own = walk(member, f"/v1/teams/{t}/api-keys")
    assert [k["key_id"] for page in own for k in page] == [key_id_of(member_key)]
    mine = member.get(f"/v1/teams/{t}/api-keys/{key_id_of(member_key)}")
    assert mine.status_code == 200
    assert mine.json()["data"] == keys[key_id_of(member_key)]
    theirs = member.get(f"/v1/teams/{t}/api-keys/{key_id_of(team['owner_key'])}")
    assert (theirs.status_code, theirs.json()["error"]["code"]) == (404, "NOT_FOUND")
    assert owner.get(f"/v1/teams/{t}/api-keys/{key_id_of(member_key)}").status_code == 200


def test_prompts_list_newest_first_and_hide_archived_unless_asked(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    url = f"/v1/teams/{team['id']}/prompts"
    created = [
        owner.post(url, json={"text": f"q{n}", "schedule": {"cron": "0 9 * * 1"}}).json()
        for n in range(3)
    ]
    ids = [c["data"]["id"] for c in created]
    archived = owner.post(f"{url}/{ids[1]}/archive")
    assert archived.status_code == 200

    _, member_key = add_member(api, team, "member")
    member = api.client(member_key)  # any role reads prompts
    live = walk(member, url)
    assert [p["id"] for page in live for p in page] == [ids[2], ids[0]]
    every = walk(member, url, include_archived="true", limit=2)
    assert [[p["id"] for p in page] for page in every] == [[ids[2], ids[1]], [ids[0]]]

    one = member.get(f"{url}/{ids[1]}")
    assert one.status_code == 200
    assert one.headers["etag"] == archived.headers["etag"] == '"2"'
    assert one.json()["data"] == {
        "id": ids[1],
        "text": "q1",
        "schedule": {"cron": "0 9 * * 1", "timezone": "UTC"},
        "archived": True,
        "last_issued_at": None,
        "version": 2,
        "created_at": one.json()["data"]["created_at"],
        "updated_at": one.json()["data"]["updated_at"],
    }
    edited = owner.patch(f"{url}/{ids[0]}", json={"clear_schedule": True})
    assert owner.get(f"{url}/{ids[0]}").json()["data"] == edited.json()["data"]
    assert member.get(f"{url}/{uuid.uuid4()}").status_code == 404


def test_webhooks_are_for_managers_only(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    url = f"/v1/teams/{team['id']}/webhooks"
    hooks = [owner.post(url, json={"url": f"https://example.com/{n}"}).json() for n in range(3)]
    ids = [h["data"]["id"] for h in hooks]
    assert owner.delete(f"{url}/{ids[0]}").status_code == 200
    disabled = owner.post(f"{url}/{ids[1]}/disable")

    _, admin_key = add_member(api, team, "admin")
    pages = walk(api.client(admin_key), url, limit=1)
    assert [[h["id"] for h in page] for page in pages] == [[ids[2]], [ids[1]]]
    listed = {h["id"]: h for page in pages for h in page}
    assert listed[ids[1]] == disabled.json()["data"]
    assert not any(h["data"]["secret"] in str(listed) for h in hooks)
    one = owner.get(f"{url}/{ids[1]}")
    assert one.json()["data"] == disabled.json()["data"]
    assert one.headers["etag"] == disabled.headers["etag"]
    assert owner.get(f"{url}/{ids[0]}").status_code == 404

    for role in ("member", "auditor"):
        _, key = add_member(api, team, role)
        client = api.client(key)
        refused = [client.get(url), client.get(f"{url}/{ids[2]}")]
        assert [(r.status_code, r.json()["error"]["code"]) for r in refused] == [
            (403, "FORBIDDEN"),
            (403, "FORBIDDEN"),
        ]


@pytest.fixture
def save_quota(api_settings: Settings) -> Iterator[SaveQuota]:
    """Saves a month's quota as it would have been recorded in that month
    (HTTP can only write in the current one); returns its position."""
    store = open_event_store(
        PostgresTarget.from_url(api_settings.database_url_value()), pool_size=1
    )

    def save(team_id: str, month: str, entries: int) -> int:
        quota = MonthlyQuota.start(uuid.UUID(team_id), month)
        for _ in range(entries):
            quota.reserve(uuid.uuid4(), 100)
        return store.save([quota], metadata=EventMetadata())[-1]

    yield save
    store.close()


def test_usage_by_month_against_the_current_plan(api: Api, save_quota: SaveQuota) -> None:
    team = api.create_team(plan="free")
    t = team["id"]
    owner = api.client(team["owner_key"])
    for n in range(3):
        assert owner.post(f"/v1/teams/{t}/entries", json={"title": f"e{n}"}).status_code == 201
    api.last_position[0] = max(api.last_position[0], save_quota(t, "2024-11", 95))
    api.last_position[0] = max(api.last_position[0], save_quota(t, "2024-12", 1))
    month = datetime.now(UTC).strftime("%Y-%m")

    _, auditor_key = add_member(api, team, "auditor")
    auditor = api.client(auditor_key)  # any role reads usage
    pages = walk(auditor, f"/v1/teams/{t}/usage", limit=2)
    assert [[u["month"] for u in page] for page in pages] == [[month, "2024-12"], ["2024-11"]]
    assert pages[0][0] == {
        "month": month,
        "used": 3,
        "limit": 100,
        "remaining": 97,
        "threshold_reached": False,
    }
    assert pages[1][0]["threshold_reached"] is True

    one = auditor.get(f"/v1/teams/{t}/usage/{month}")
    assert one.status_code == 200
    assert one.json()["data"] == pages[0][0]
    etag = one.headers["etag"]
    assert owner.patch(f"/v1/teams/{t}", json={"plan": "team"}).status_code == 200
    after = auditor.get(f"/v1/teams/{t}/usage/{month}")
    assert (after.json()["data"]["limit"], after.json()["data"]["remaining"]) == (10_000, 9_997)
    assert after.headers["etag"] != etag

    quiet = auditor.get(f"/v1/teams/{t}/usage/2020-02")
    assert quiet.status_code == 200
    assert quiet.json()["data"] == {
        "month": "2020-02",
        "used": 0,
        "limit": 10_000,
        "remaining": 10_000,
        "threshold_reached": False,
    }
    bad = auditor.get(f"/v1/teams/{t}/usage/2020-13")
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "VALIDATION_ERROR")


def test_another_teams_reads_answer_404(api: Api) -> None:
    ours, theirs = api.create_team(name="ours"), api.create_team(name="theirs")
    mine = api.client(ours["owner_key"])
    other = api.client(theirs["owner_key"])
    o, t = ours["id"], theirs["id"]
    prompt = mine.post(f"/v1/teams/{o}/prompts", json={"text": "ours"}).json()["data"]["id"]
    hook = mine.post(f"/v1/teams/{o}/webhooks", json={"url": "https://example.com/o"})
    hook_id = hook.json()["data"]["id"]
    key = key_id_of(ours["owner_key"])
    member = ours["owner_user_id"]
    attempts = [
        other.get(f"/v1/teams/{o}/{path}")
        for path in (
            "members",
            f"members/{member}",
            "api-keys",
            f"api-keys/{key}",
            "prompts",
            f"prompts/{prompt}",
            "webhooks",
            f"webhooks/{hook_id}",
            "usage",
            "usage/2025-01",
        )
    ] + [
        # Their own team's URLs with our ids: still nothing.
        other.get(f"/v1/teams/{t}/{path}")
        for path in (
            f"members/{member}",
            f"api-keys/{key}",
            f"prompts/{prompt}",
            f"webhooks/{hook_id}",
        )
    ]
    assert [r.status_code for r in attempts] == [404] * len(attempts)
    assert all(r.json()["error"]["code"] == "NOT_FOUND" for r in attempts)


@pytest.mark.parametrize("path", ["members", "api-keys", "prompts", "webhooks", "usage"])
def test_a_garbage_cursor_is_refused(api: Api, path: str) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    url = f"/v1/teams/{team['id']}/{path}"
    for cursor in ("not-a-cursor", "W10"):  # W10 is "[]": valid base64 JSON, not ours
        response = owner.get(url, params={"cursor": cursor})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "MALFORMED"
        assert response.json()["error"]["details"] == {"field": "cursor"}


def test_a_cursor_of_another_list_is_refused(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    add_member(api, team, "member")
    first = owner.get(f"/v1/teams/{team['id']}/members", params={"limit": 1}).json()
    assert first["next_cursor"] is not None
    wrong = owner.get(f"/v1/teams/{team['id']}/api-keys", params={"cursor": first["next_cursor"]})
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (400, "MALFORMED")
