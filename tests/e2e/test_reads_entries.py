"""Entries read from the read model over HTTP: read-your-writes, filters, pages."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Api


def _entries(api: Api, team: dict[str, Any]) -> tuple[httpx.Client, str]:
    return api.client(team["owner_key"]), f"/v1/teams/{team['id']}/entries"


def test_a_read_with_min_position_sees_the_command_that_returned_it(api: Api) -> None:
    team = api.create_team()
    # No session: the position is passed by hand, as documented for clients.
    owner = api.client(team["owner_key"], session=False)
    url = f"/v1/teams/{team['id']}/entries"
    for n in range(20):
        created = owner.post(url, json={"title": f"note {n}"})
        position = created.json()["position"]
        assert int(created.headers["Chronik-Position"]) == position
        entry_id = created.json()["data"]["id"]
        read = owner.get(f"{url}/{entry_id}", params={"min_position": position})
        assert read.status_code == 200, read.text
        assert read.json()["data"]["title"] == f"note {n}"
        edited = owner.patch(f"{url}/{entry_id}", json={"body": "more"})
        header = {"Chronik-Min-Position": edited.headers["Chronik-Position"]}
        assert owner.get(f"{url}/{entry_id}", headers=header).json()["data"]["body"] == "more"


@pytest.mark.read_wait_timeout(1)
def test_a_position_the_projection_cannot_reach_answers_503_stale_read(api: Api) -> None:
    team = api.create_team()
    owner, url = _entries(api, team)
    far = owner.get(url, params={"min_position": 10**12})
    assert far.status_code == 503
    assert far.headers["Retry-After"] == "1"
    error = far.json()["error"]
    assert error["code"] == "STALE_READ"
    assert error["details"]["projection"] == "entries"
    assert error["details"]["min_position"] == 10**12


def test_lists_page_newest_first_with_opaque_cursors(api: Api) -> None:
    team = api.create_team()
    owner, url = _entries(api, team)
    for n in range(7):
        owner.post(url, json={"title": f"entry {n}", "tags": ["even" if n % 2 == 0 else "odd"]})
    titles: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = owner.get(url, params=params).json()
        titles += [e["title"] for e in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert titles == [f"entry {n}" for n in reversed(range(7))]
    assert pages == 3
    even = owner.get(url, params={"tag": "EVEN"}).json()["data"]
    assert [e["title"] for e in even] == ["entry 6", "entry 4", "entry 2", "entry 0"]


def test_filters_and_soft_deletes(api: Api) -> None:
    team = api.create_team()
    owner, url = _entries(api, team)
    member_key = _member_key(api, team)
    member = api.client(member_key)
    mine = member.post(url, json={"title": "member's", "visibility": "team"}).json()["data"]
    secret = member.post(url, json={"title": "private", "visibility": "private"}).json()["data"]
    gone = owner.post(url, json={"title": "to delete"}).json()["data"]
    owner.delete(f"{url}/{gone['id']}")
    me = member.get("/v1/me").json()["user_id"]

    def titles(client: httpx.Client, **params: Any) -> list[str]:
        response = client.get(url, params=params)
        assert response.status_code == 200, response.text
        return [e["title"] for e in response.json()["data"]]

    assert titles(owner) == ["member's"]  # not the private one, not the deleted one
    assert titles(owner, include_deleted=True) == ["to delete", "member's"]
    assert titles(member) == ["private", "member's"]
    assert titles(member, visibility="private") == ["private"]
    assert titles(owner, author=me) == ["member's"]
    assert owner.get(f"{url}/{secret['id']}").status_code == 404
    assert member.get(f"{url}/{secret['id']}").status_code == 200
    deleted = owner.get(f"{url}/{gone['id']}").json()["data"]
    assert deleted["deleted_at"] is not None
    later = owner.get(url, params={"updated_after": "2999-01-01T00:00:00Z"}).json()["data"]
    assert later == []
    assert mine["version"] == 1


def test_bad_list_parameters_get_the_envelope(api: Api) -> None:
    team = api.create_team()
    owner, url = _entries(api, team)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"cursor": "not-a-cursor"}, 400, "MALFORMED"),
        ({"limit": 0}, 422, "VALIDATION_ERROR"),
        ({"limit": 201}, 422, "VALIDATION_ERROR"),
        ({"author": "nope"}, 422, "VALIDATION_ERROR"),
        ({"updated_after": "2024-01-01T00:00:00"}, 422, "VALIDATION_ERROR"),
        ({"min_position": -1}, 422, "VALIDATION_ERROR"),
    ]
    for params, status, code in cases:
        response = owner.get(url, params=params)
        assert response.status_code == status, (params, response.text)
        assert response.json()["error"]["code"] == code


def _member_key(api: Api, team: dict[str, Any]) -> str:
    owner = api.client(team["owner_key"])
    base = f"/v1/teams/{team['id']}"
    user = owner.post(
        f"{base}/members",
        json={"email": "m@example.com", "display_name": "M", "role": "member"},
    ).json()["data"]["user_id"]
    key: str = owner.post(f"{base}/api-keys", json={"user_id": user, "name": "k"}).json()["data"][
        "key"
    ]
    return key
