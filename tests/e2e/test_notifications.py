"""Notifications end to end: commands over HTTP, the relay through real NATS,
the notification consumer, and the inbox and preferences routes."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from infra.devstack.processes import wait_until
from infra.settings import Settings
from tests.e2e.conftest import Api

KINDS = [
    "entry_shared", "member_added", "role_changed", "quota_threshold", "quota_exhausted",
    "webhook_disabled", "prompt_issued",
]  # fmt: skip


def _member(api: Api, team: dict[str, Any], name: str, role: str = "member") -> httpx.Client:
    owner = api.client(team["owner_key"])
    added = owner.post(
        f"/v1/teams/{team['id']}/members",
        json={"email": f"{name}@example.com", "display_name": name.title(), "role": role},
    )
    assert added.status_code == 201, added.text
    user_id = added.json()["data"]["user_id"]
    key = owner.post(f"/v1/teams/{team['id']}/api-keys", json={"user_id": user_id, "name": "k"})
    assert key.status_code == 201, key.text
    return api.client(key.json()["data"]["key"])


def _write(client: httpx.Client, team: dict[str, Any], title: str, **fields: Any) -> None:
    response = client.post(f"/v1/teams/{team['id']}/entries", json={"title": title, **fields})
    assert response.status_code == 201, response.text


def _inbox(client: httpx.Client, team: dict[str, Any], **params: Any) -> dict[str, Any]:
    response = client.get(f"/v1/teams/{team['id']}/notifications", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _all(client: httpx.Client, team: dict[str, Any], **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = _inbox(client, team, **params, **({"cursor": cursor} if cursor else {}))
        found += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def test_preferences_are_each_members_own_with_defaults(api: Api) -> None:
    team = api.create_team()
    wim = _member(api, team, "wim")
    base = f"/v1/teams/{team['id']}/notification-preferences"

    listed = wim.get(base)
    assert listed.status_code == 200, listed.text
    assert listed.json()["data"] == [
        {"kind": kind, "inbox": True, "email": True, "digest": False,
         "email_mode": "immediate", "default": True}
        for kind in KINDS
    ]  # fmt: skip

    changed = wim.patch(f"{base}/entry_shared", json={"email": False})
    assert changed.status_code == 200, changed.text
    assert changed.json()["data"] == {
        "kind": "entry_shared", "inbox": True, "email": False, "digest": False,
        "email_mode": "off",
    }  # fmt: skip
    assert changed.headers["ETag"] == '"2"'
    digest = wim.patch(f"{base}/prompt_issued", json={"digest": True})
    assert digest.json()["data"]["email_mode"] == "digest"

    mine = {p["kind"]: p for p in wim.get(base).json()["data"]}
    assert mine["entry_shared"]["email"] is False
    assert mine["entry_shared"]["default"] is False
    assert mine["prompt_issued"]["digest"] is True
    assert mine["member_added"]["default"] is True
    # Another member's are their own: the owner still has every default.
    owner = api.client(team["owner_key"])
    assert all(p["default"] for p in owner.get(base).json()["data"])

    for body in ({}, {"inbox": None}, {"inbox": "no"}, {"everything": False}):
        refused = wim.patch(f"{base}/entry_shared", json=body)
        assert refused.status_code == 422, (body, refused.text)
        assert refused.json()["error"]["code"] == "VALIDATION_ERROR"
    assert wim.patch(f"{base}/everything", json={"inbox": False}).status_code == 422
    # A partial change is PATCH (fields left out are kept): there is no PUT.
    assert wim.put(f"{base}/entry_shared", json={"inbox": False}).status_code == 405

    other = api.create_team(name="Other")
    stranger = api.client(other["owner_key"])
    assert stranger.get(base).status_code == 404
    assert stranger.patch(f"{base}/entry_shared", json={"inbox": False}).status_code == 404


@pytest.mark.usefixtures("fanout")
def test_the_inbox_pages_filters_and_marks_read(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    wim = _member(api, team, "wim")
    # The inbox is in the order notifications were recorded (docs/notifications.md),
    # and "added" waits for the members read model, so it could be recorded after
    # the first entries: let it be recorded before writing them.
    wait_until(lambda: _inbox(wim, team)["unread_count"] == 1, timeout=30, what="added")
    for n in range(5):
        _write(owner, team, f"Entry {n}", body=f"body {n}")
    _write(owner, team, "Private", visibility="private")

    # Wim: told he was added, and of the five team entries; not of the private one.
    wait_until(lambda: _inbox(wim, team)["unread_count"] == 6, timeout=30, what="six notifications")
    everything = _all(wim, team, limit=2)
    assert [n["kind"] for n in everything] == ["entry_shared"] * 5 + ["member_added"]
    assert [n["data"]["title"] for n in everything[:5]] == [f"Entry {n}" for n in (4, 3, 2, 1, 0)]
    assert everything[0]["title"].endswith("shared “Entry 4”")
    assert everything[0]["body"].endswith("with the team.\n\nbody 4")
    assert len({n["id"] for n in everything}) == 6
    first = everything[0]
    assert set(first) == {
        "id", "kind", "title", "body", "data", "event_id", "position", "created_at", "read",
        "read_at",
    }  # fmt: skip
    assert first["read"] is False
    assert first["data"]["event_type"] == "entry.created"
    assert "_delivery" not in first["data"]
    page = _inbox(wim, team, limit=2)
    assert len(page["data"]) == 2
    assert page["next_cursor"] is not None
    assert page["unread_count"] == 6

    base = f"/v1/teams/{team['id']}/notifications"
    marked = wim.post(f"{base}/{first['id']}/read")
    assert marked.status_code == 200, marked.text
    assert marked.json()["data"]["read"] is True
    read_at = marked.json()["data"]["read_at"]
    assert wim.post(f"{base}/{first['id']}/read").json()["data"]["read_at"] == read_at
    unread = _inbox(wim, team, unread="true")
    assert unread["unread_count"] == 5
    assert first["id"] not in {n["id"] for n in unread["data"]}
    assert len(_all(wim, team, unread="true", limit=2)) == 5

    everyone = wim.post(f"{base}/read-all")
    assert everyone.status_code == 200, everyone.text
    assert everyone.json()["data"] == {"marked": 5}
    assert wim.post(f"{base}/read-all").json()["data"] == {"marked": 0}
    after = _inbox(wim, team)
    assert after["unread_count"] == 0
    assert all(n["read"] for n in after["data"])
    assert _inbox(wim, team, unread="true")["data"] == []
    assert wim.get(base, params={"cursor": "bogus"}).status_code == 400


@pytest.mark.usefixtures("fanout")
def test_nobody_reads_or_marks_another_members_notifications(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    wim = _member(api, team, "wim", role="admin")
    ada = _member(api, team, "ada")
    _write(wim, team, "From Wim")
    wait_until(lambda: _inbox(owner, team)["unread_count"] == 1, timeout=30, what="owner told")
    wait_until(lambda: _inbox(ada, team)["unread_count"] == 2, timeout=30, what="ada told")
    (owners,) = _inbox(owner, team)["data"]
    base = f"/v1/teams/{team['id']}/notifications"
    for path in (f"{base}/{owners['id']}", f"{base}/{owners['id']}/read"):
        response = ada.post(path) if path.endswith("/read") else ada.get(path)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "NOT_FOUND"
    assert ada.post(f"{base}/read-all").json()["data"] == {"marked": 2}
    assert _inbox(owner, team)["unread_count"] == 1  # the owner's are untouched
    assert owner.get(f"{base}/{owners['id']}").json()["data"]["read"] is False

    other = api.create_team(name="Other")
    stranger = api.client(other["owner_key"])
    assert stranger.get(base).status_code == 404
    assert stranger.post(f"{base}/{owners['id']}/read").status_code == 404
    assert stranger.post(f"{base}/read-all").status_code == 404
    # Their own inbox, under their own team, has nothing of ours.
    assert _inbox(stranger, other)["data"] == []


@pytest.mark.usefixtures("fanout")
def test_inbox_off_hides_it_and_email_only_still_emails(api: Api, api_settings: Settings) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    wim = _member(api, team, "wim")
    prefs = f"/v1/teams/{team['id']}/notification-preferences/entry_shared"
    assert wim.patch(prefs, json={"inbox": False}).status_code == 200
    _write(owner, team, "Hidden from Wim's inbox")
    url = api_settings.database_url_value()

    def stored() -> list[dict[str, Any]]:
        with psycopg.connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT n.id, n.kind, n.data, o.to_address FROM notifications n"
                " LEFT JOIN email_outbox o ON o.notification_id = n.id"
                " WHERE n.team_id = %s AND n.kind = 'entry_shared'",
                (team["id"],),
            ).fetchall()

    wait_until(lambda: len(stored()) == 1, timeout=30, what="the email-only notification")
    (hidden,) = stored()
    assert hidden["to_address"] == "wim@example.com"
    assert hidden["data"]["_delivery"] == {"inbox": False, "email": "immediate"}
    # Not in Wim's inbox, not counted, not markable. "added" waits for the
    # members read model, so it may be recorded after the entry's notification.
    wait_until(lambda: _inbox(wim, team)["unread_count"] == 1, timeout=30, what="added")
    listed = _inbox(wim, team)
    assert [n["kind"] for n in listed["data"]] == ["member_added"]
    assert listed["unread_count"] == 1
    base = f"/v1/teams/{team['id']}/notifications"
    assert wim.post(f"{base}/{hidden['id']}/read").status_code == 404
    assert wim.post(f"{base}/read-all").json()["data"] == {"marked": 1}
