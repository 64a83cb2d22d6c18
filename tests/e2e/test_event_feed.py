"""The event feed over HTTP: pages, type filters, NDJSON exports, tenancy and
private entries."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from infra.db import PostgresTarget
from infra.event_store import open_event_store
from infra.settings import Settings
from tests.e2e.conftest import Api
from tests.projection_support import create_team, seed_entries, wait_caught_up

NDJSON = {"Accept": "application/x-ndjson"}


def _url(team_id: Any) -> str:
    return f"/v1/teams/{team_id}/events"


def _member_key(api: Api, team: dict[str, Any], name: str, role: str = "member") -> str:
    owner = api.client(team["owner_key"])
    base = f"/v1/teams/{team['id']}"
    added = owner.post(
        f"{base}/members",
        json={"email": f"{name}@example.com", "display_name": name, "role": role},
    )
    assert added.status_code == 201, added.text
    user_id = added.json()["data"]["user_id"]
    issued = owner.post(f"{base}/api-keys", json={"user_id": user_id, "name": name})
    assert issued.status_code == 201, issued.text
    key: str = issued.json()["data"]["key"]
    return key


def _all_pages(client: httpx.Client, url: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every event, following next_after; and how many pages it took."""
    events: list[dict[str, Any]] = []
    after, pages = 0, 0
    while True:
        response = client.get(url, params={**params, "after": after})
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        events += body["data"]
        if body["data"]:
            assert body["next_after"] == body["data"][-1]["position"]
        if not body["has_more"]:
            return events, pages
        after = body["next_after"]


def _export(client: httpx.Client, url: str, **params: Any) -> list[dict[str, Any]]:
    with client.stream("GET", url, params=params, headers=NDJSON) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [orjson.loads(line) for line in response.iter_lines() if line]


def test_pages_follow_next_after_and_types_filter(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    for n in range(6):
        owner.post(f"/v1/teams/{team['id']}/entries", json={"title": f"entry {n}"})
    url = _url(team["id"])

    everything = owner.get(url, params={"limit": 1000}).json()
    assert everything["has_more"] is False
    events = everything["data"]
    positions = [e["position"] for e in events]
    assert positions == sorted(set(positions))
    assert events[0]["type"] == "team.created"
    assert events[0]["id"] == f"evt_{events[0]['position']}"
    assert {e["team_id"] for e in events} == {team["id"]}

    paged, pages = _all_pages(owner, url, limit=2)
    assert paged == events
    assert pages == -(-len(events) // 2)
    last = owner.get(url, params={"after": positions[-1]}).json()
    assert last == {"data": [], "next_after": None, "has_more": False}

    created = owner.get(url, params={"types": "entry.created"}).json()["data"]
    assert [e["data"]["title"] for e in created] == [f"entry {n}" for n in range(6)]
    two = owner.get(url, params={"types": " team.created , entry.created"}).json()["data"]
    assert [e["type"] for e in two] == ["team.created"] + ["entry.created"] * 6


def test_unknown_types_and_bad_parameters_are_refused(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    url = _url(team["id"])
    response = owner.get(url, params={"types": "entry.created,entry.exploded,nope"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]["unknown"] == ["entry.exploded", "nope"]
    assert "entry.created" in error["details"]["allowed"]
    assert "entry.exploded" in error["message"]
    for params in ({"after": -1}, {"limit": 0}, {"limit": 1001}, {"after": "x"}):
        bad = owner.get(url, params=params)
        assert bad.status_code == 422, (params, bad.text)
        assert bad.json()["error"]["code"] == "VALIDATION_ERROR"
    # Refused before any streaming starts, with the same envelope.
    bad_export = owner.get(url, params={"types": "nope"}, headers=NDJSON)
    assert bad_export.status_code == 422


def test_an_ndjson_export_streams_every_event_line_by_line(
    api: Api, api_settings: Settings
) -> None:
    # More than one export page (1000 events): seeded straight into the store.
    url_db = api_settings.database_url_value()
    store = open_event_store(PostgresTarget.from_url(url_db), pool_size=2)
    try:
        seeded = create_team(store, "Seeded")
        seed_entries(store, seeded.owner, 2_345, per_save=500)
    finally:
        store.close()
    wait_caught_up(url_db, "event_feed", timeout=120)
    owner = api.client(seeded.owner_key)
    url = _url(seeded.team_id)

    exported = _export(owner, url, limit=5)  # the limit does not cut an export
    paged, pages = _all_pages(owner, url, limit=1000)
    assert pages == 3
    assert exported == paged
    assert len(exported) == 2_345 + 2  # the entries, team.created, the first key
    after = exported[-10]["position"]
    assert _export(owner, url, after=after) == exported[-9:]
    assert _export(owner, url, types="team.api_key_issued") == [
        e for e in exported if e["type"] == "team.api_key_issued"
    ]
    nothing = owner.get(url, params={"after": exported[-1]["position"]}, headers=NDJSON)
    assert (nothing.status_code, nothing.content) == (200, b"")


def test_another_team_gets_404_and_every_role_may_read(api: Api) -> None:
    team = api.create_team(name="Ours")
    other = api.create_team(name="Theirs")
    url = _url(team["id"])
    stranger = api.client(other["owner_key"])
    for headers in ({}, NDJSON):
        response = stranger.get(url, headers=headers)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NOT_FOUND"
    assert api.client().get(url).status_code == 401
    for role in ("admin", "member", "auditor"):
        reader = api.client(_member_key(api, team, role, role))
        response = reader.get(url)
        assert response.status_code == 200, (role, response.text)
        assert {e["team_id"] for e in response.json()["data"]} == {team["id"]}


def test_a_private_entry_s_events_reach_its_author_only(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    ana = api.client(_member_key(api, team, "ana"))
    ben = api.client(_member_key(api, team, "ben"))
    auditor = api.client(_member_key(api, team, "audrey", "auditor"))
    entries = f"/v1/teams/{team['id']}/entries"
    diary = ana.post(entries, json={"title": "diary", "visibility": "private"}).json()["data"]
    ana.patch(f"{entries}/{diary['id']}", json={"body": "secret thoughts"})
    ana.delete(f"{entries}/{diary['id']}")
    ana.post(entries, json={"title": "shared"})
    url = _url(team["id"])

    def entry_events(client: httpx.Client) -> list[tuple[str, str]]:
        listed = client.get(url, params={"limit": 1000}).json()["data"]
        assert _export(client, url) == listed
        return [(e["type"], e["aggregate_id"]) for e in listed if e["type"].startswith("entry.")]

    mine = entry_events(ana)
    assert [t for t, i in mine if i == diary["id"]] == [
        "entry.created", "entry.edited", "entry.deleted",
    ]  # fmt: skip
    for other in (owner, ben, auditor):
        seen = entry_events(other)
        assert [t for t, _ in seen] == ["entry.created"]  # the shared one only
        assert diary["id"] not in {i for _, i in seen}
    text = owner.get(url, params={"limit": 1000}).text
    assert "secret thoughts" not in text


def test_min_position_waits_for_the_feed(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"], session=False)
    written = owner.post(f"/v1/teams/{team['id']}/entries", json={"title": "now"})
    position = written.json()["position"]
    found = owner.get(_url(team["id"]), params={"min_position": position, "types": "entry.created"})
    assert found.status_code == 200
    assert [e["data"]["title"] for e in found.json()["data"]] == ["now"]


@pytest.mark.read_wait_timeout(1)
def test_a_position_the_feed_cannot_reach_answers_503(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"], session=False)
    far = owner.get(_url(team["id"]), params={"min_position": 10**12})
    assert far.status_code == 503
    assert far.json()["error"]["details"]["projection"] == "event_feed"


def test_plain_members_do_not_get_webhook_or_key_events(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    base = f"/v1/teams/{team['id']}"
    user = owner.post(
        f"{base}/members", json={"email": "w@example.com", "display_name": "W", "role": "member"}
    ).json()["data"]["user_id"]
    key = owner.post(f"{base}/api-keys", json={"user_id": user, "name": "k"}).json()["data"]["key"]
    member = api.client(key)
    types = {e["type"] for e in member.get(f"{base}/events").json()["data"]}
    assert "team.member_added" in types
    assert not any(t.startswith(("webhook.", "team.api_key_")) for t in types)
    only = member.get(f"{base}/events", params={"types": "team.api_key_issued"}).json()
    assert only["data"] == []
    managers = {e["type"] for e in owner.get(f"{base}/events").json()["data"]}
    assert "team.api_key_issued" in managers
