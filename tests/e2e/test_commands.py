"""Commands over HTTP against the real app and PostgreSQL."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from infra.settings import Settings
from tests.e2e.conftest import OPERATOR_TOKEN, Api


def _add_member(api: Api, team: dict[str, Any], role: str) -> str:
    """A new member of ``role`` in ``team``; returns their key."""
    owner = api.client(team["owner_key"])
    email = f"{role}-{uuid.uuid4().hex[:6]}@example.com"
    added = owner.post(
        f"/v1/teams/{team['id']}/members",
        json={"email": email, "display_name": role, "role": role},
    )
    assert added.status_code == 201, added.text
    user_id = added.json()["data"]["user_id"]
    key = owner.post(
        f"/v1/teams/{team['id']}/api-keys", json={"user_id": user_id, "name": "laptop"}
    )
    assert key.status_code == 201, key.text
    token: str = key.json()["data"]["key"]
    return token


def test_operator_creates_a_team_and_the_owner_key_works(api: Api) -> None:
    team = api.create_team()
    me = api.client(team["owner_key"]).get("/v1/me")
    assert me.status_code == 200
    assert me.json() == {
        "team_id": team["id"],
        "user_id": team["owner_user_id"],
        "key_id": team["owner_key"].split("_")[1],
        "role": "owner",
    }


def test_team_creation_needs_the_operator_token(api: Api) -> None:
    body = {"name": "x", "owner_email": "a@example.com"}
    assert api.client().post("/v1/teams", json=body).status_code == 401
    assert api.client("wrong").post("/v1/teams", json=body).status_code == 401
    assert api.client(OPERATOR_TOKEN).post("/v1/teams", json=body).status_code == 201


def test_a_created_entry_reads_back_with_etag_and_position(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    created = owner.post(
        f"/v1/teams/{team['id']}/entries",
        json={"title": "Day 1", "body": "Hello", "tags": ["Intro", "intro", "x"]},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["data"]["version"] == 1
    assert body["position"] > 0
    assert created.headers["etag"] == '"1"'
    assert int(created.headers["chronik-position"]) == body["position"]
    entry = owner.get(f"/v1/teams/{team['id']}/entries/{body['data']['id']}").json()["data"]
    assert entry["tags"] == ["intro", "x"]
    assert entry["author_id"] == team["owner_user_id"]


def test_client_generated_ids_are_honoured_once(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    entry_id = str(uuid.uuid4())
    url = f"/v1/teams/{team['id']}/entries"
    first = owner.post(url, json={"id": entry_id, "title": "offline"})
    assert first.status_code == 201
    assert first.json()["data"]["id"] == entry_id
    again = owner.post(url, json={"id": entry_id, "title": "offline"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "ALREADY_EXISTS"


@pytest.mark.parametrize(
    ("role", "allowed"),
    [("owner", True), ("admin", True), ("member", False), ("auditor", False)],
)
def test_who_may_edit_another_members_team_entry(api: Api, role: str, allowed: bool) -> None:
    team = api.create_team()
    author = api.client(_add_member(api, team, "member"))
    entry = author.post(f"/v1/teams/{team['id']}/entries", json={"title": "mine"}).json()
    actor_key = team["owner_key"] if role == "owner" else _add_member(api, team, role)
    response = api.client(actor_key).patch(
        f"/v1/teams/{team['id']}/entries/{entry['data']['id']}", json={"title": "theirs"}
    )
    assert response.status_code == (200 if allowed else 403), response.text
    if not allowed:
        assert response.json()["error"]["code"] == "FORBIDDEN"


def test_auditors_may_not_write_and_members_may_not_manage(api: Api) -> None:
    team = api.create_team()
    auditor = api.client(_add_member(api, team, "auditor"))
    member = api.client(_add_member(api, team, "member"))
    t = team["id"]
    assert auditor.post(f"/v1/teams/{t}/entries", json={"title": "x"}).status_code == 403
    refused = [
        member.post(f"/v1/teams/{t}/members", json={"email": "z@example.com", "display_name": "z"}),
        member.post(f"/v1/teams/{t}/prompts", json={"text": "What went well?"}),
        member.post(f"/v1/teams/{t}/webhooks", json={"url": "https://example.com/hook"}),
        member.patch(f"/v1/teams/{t}", json={"plan": "enterprise"}),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403, 403]


def test_private_entries_are_invisible_to_everyone_but_the_author(api: Api) -> None:
    team = api.create_team()
    author = api.client(_add_member(api, team, "member"))
    created = author.post(
        f"/v1/teams/{team['id']}/entries", json={"title": "diary", "visibility": "private"}
    ).json()
    url = f"/v1/teams/{team['id']}/entries/{created['data']['id']}"
    assert author.get(url).status_code == 200
    owner = api.client(team["owner_key"])
    assert owner.get(url).status_code == 404
    assert owner.patch(url, json={"title": "peek"}).status_code == 404


def test_another_teams_ids_always_answer_404(api: Api) -> None:
    ours, theirs = api.create_team(name="ours"), api.create_team(name="theirs")
    mine = api.client(ours["owner_key"])
    other = api.client(theirs["owner_key"])
    entry = mine.post(f"/v1/teams/{ours['id']}/entries", json={"title": "ours"}).json()
    entry_id = entry["data"]["id"]
    attempts = [
        other.get(f"/v1/teams/{ours['id']}"),
        other.get(f"/v1/teams/{ours['id']}/entries/{entry_id}"),
        other.patch(f"/v1/teams/{ours['id']}/entries/{entry_id}", json={"title": "x"}),
        other.post(f"/v1/teams/{ours['id']}/entries", json={"title": "x"}),
        # Their own team URL with our entry's id: still nothing.
        other.get(f"/v1/teams/{theirs['id']}/entries/{entry_id}"),
        other.patch(f"/v1/teams/{theirs['id']}/entries/{entry_id}", json={"title": "x"}),
        other.delete(f"/v1/teams/{theirs['id']}/entries/{entry_id}"),
    ]
    assert [r.status_code for r in attempts] == [404] * len(attempts)
    assert all(r.json()["error"]["code"] == "NOT_FOUND" for r in attempts)


def test_soft_delete_and_restore(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    entry = owner.post(f"/v1/teams/{team['id']}/entries", json={"title": "t"}).json()
    url = f"/v1/teams/{team['id']}/entries/{entry['data']['id']}"
    assert owner.delete(url).status_code == 200
    assert owner.get(url).json()["data"]["deleted_at"] is not None
    edit = owner.patch(url, json={"title": "nope"})
    assert (edit.status_code, edit.json()["error"]["code"]) == (409, "ENTRY_DELETED")
    assert owner.post(f"{url}/restore").status_code == 200
    assert owner.get(url).json()["data"]["deleted_at"] is None


def test_revoked_and_removed_keys_stop_working_at_once(api: Api) -> None:
    team = api.create_team()
    key = _add_member(api, team, "member")
    member = api.client(key)
    assert member.get("/v1/me").status_code == 200
    owner = api.client(team["owner_key"])
    key_id = key.split("_")[1]
    assert owner.delete(f"/v1/teams/{team['id']}/api-keys/{key_id}").status_code == 200
    assert member.get("/v1/me").status_code == 401

    other_key = _add_member(api, team, "admin")
    user_id = api.client(other_key).get("/v1/me").json()["user_id"]
    assert owner.delete(f"/v1/teams/{team['id']}/members/{user_id}").status_code == 200
    assert api.client(other_key).get("/v1/me").status_code == 401


def test_the_last_owner_stays(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    response = owner.delete(f"/v1/teams/{team['id']}/members/{team['owner_user_id']}")
    assert (response.status_code, response.json()["error"]["code"]) == (409, "LAST_OWNER")


def test_prompts_and_webhooks_lifecycle(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    t = team["id"]
    prompt = owner.post(
        f"/v1/teams/{t}/prompts",
        json={"text": "What did you learn?", "schedule": {"cron": "0 9 * * 1", "timezone": "UTC"}},
    )
    assert prompt.status_code == 201, prompt.text
    prompt_url = f"/v1/teams/{t}/prompts/{prompt.json()['data']['id']}"
    assert owner.patch(prompt_url, json={"clear_schedule": True}).status_code == 200
    assert owner.post(f"{prompt_url}/archive").status_code == 200
    assert owner.patch(prompt_url, json={"text": "x"}).json()["error"]["code"] == "PROMPT_ARCHIVED"

    hook = owner.post(f"/v1/teams/{t}/webhooks", json={"url": "https://example.com/in"})
    assert hook.status_code == 201, hook.text
    secret = hook.json()["data"]["secret"]
    assert secret.startswith("whsec_")
    hook_url = f"/v1/teams/{t}/webhooks/{hook.json()['data']['id']}"
    view = owner.get(hook_url).json()["data"]
    assert secret not in str(view)
    rotated = owner.post(f"{hook_url}/rotate-secret", json={"overlap_seconds": 60})
    assert rotated.json()["data"]["secret"] != secret
    assert owner.post(f"{hook_url}/disable").json()["data"]["enabled"] is False
    assert owner.post(f"{hook_url}/enable").json()["data"]["enabled"] is True
    assert owner.delete(hook_url).status_code == 200
    assert owner.get(hook_url).status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://localhost/hook",
    ],
)
def test_webhook_urls_to_private_places_are_refused(api: Api, url: str) -> None:
    team = api.create_team()
    response = api.client(team["owner_key"]).post(
        f"/v1/teams/{team['id']}/webhooks", json={"url": url}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


def test_bad_input_gets_the_envelope(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    url = f"/v1/teams/{team['id']}/entries"
    malformed = owner.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert (malformed.status_code, malformed.json()["error"]["code"]) == (400, "MALFORMED")
    unknown = owner.post(url, json={"title": "x", "colour": "red"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (422, "VALIDATION_ERROR")
    assert unknown.json()["error"]["details"]["fields"][0]["field"].endswith("colour")
    huge = owner.post(url, json={"title": "x", "body": "y" * 2_000_000})
    assert (huge.status_code, huge.json()["error"]["code"]) == (413, "PAYLOAD_TOO_LARGE")
    no_key = api.client().get("/v1/me")
    assert (no_key.status_code, no_key.json()["error"]["code"]) == (401, "UNAUTHENTICATED")
    bad_key = api.client("chk_0000000000000000_" + "x" * 40).get("/v1/me")
    assert bad_key.status_code == 401
    bad_if_match = owner.patch(
        f"{url}/{uuid.uuid4()}", json={"title": "x"}, headers={"If-Match": "v"}
    )
    assert bad_if_match.status_code == 400
    assert all("request_id" in r.json() for r in (malformed, unknown, huge, no_key))


def test_fifty_concurrent_edits_with_one_if_match_one_wins(api: Api) -> None:
    team = api.create_team()
    owner_key = team["owner_key"]
    created = api.client(owner_key).post(f"/v1/teams/{team['id']}/entries", json={"title": "v1"})
    url = f"/v1/teams/{team['id']}/entries/{created.json()['data']['id']}"

    def edit(n: int) -> int:
        with api.client(owner_key) as c:
            return c.patch(
                url, json={"title": f"edit {n}"}, headers={"If-Match": '"1"'}
            ).status_code

    with ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(edit, range(50)))
    assert codes.count(200) == 1
    assert codes.count(409) == 49
    assert api.client(owner_key).get(url).json()["data"]["version"] == 2


def test_fifty_concurrent_creates_at_quota_minus_ten_let_exactly_ten_through(api: Api) -> None:
    team = api.create_team(plan="free")  # 100 entries a month
    owner_key = team["owner_key"]
    url = f"/v1/teams/{team['id']}/entries"
    with api.client(owner_key) as c:
        for n in range(90):
            assert c.post(url, json={"title": f"warm-up {n}"}).status_code == 201

    def create(n: int) -> httpx.Response:
        with api.client(owner_key) as c:
            return c.post(url, json={"title": f"race {n}"})

    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(create, range(50)))
    codes = [r.status_code for r in responses]
    assert codes.count(201) == 10, codes
    refused = [r.json()["error"]["code"] for r in responses if r.status_code != 201]
    assert refused == ["QUOTA_EXCEEDED"] * 40


def test_one_idempotency_key_twenty_times_appends_once(api: Api) -> None:
    team = api.create_team()
    owner_key = team["owner_key"]
    url = f"/v1/teams/{team['id']}/entries"
    headers = {"Idempotency-Key": "create-once-1"}

    def create(_: int) -> httpx.Response:
        with api.client(owner_key) as c:
            return c.post(url, json={"title": "once"}, headers=headers)

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(create, range(20)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.content for r in responses}) == 1
    entry_id = responses[0].json()["data"]["id"]
    assert api.client(owner_key).get(f"{url}/{entry_id}").status_code == 200
    mismatch = api.client(owner_key).post(url, json={"title": "other"}, headers=headers)
    assert (mismatch.status_code, mismatch.json()["error"]["code"]) == (409, "IDEMPOTENCY_MISMATCH")


def test_secrets_are_shown_once_even_to_an_idempotent_replay(
    api: Api, api_settings: Settings
) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    user_id = team["owner_user_id"]
    url = f"/v1/teams/{team['id']}/api-keys"
    headers = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    first = owner.post(url, json={"user_id": user_id, "name": "ci"}, headers=headers)
    again = owner.post(url, json={"user_id": user_id, "name": "ci"}, headers=headers)
    assert first.status_code == again.status_code == 201
    key = first.json()["data"]["key"]
    assert key.startswith("chk_")
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["data"] == {"key_id": first.json()["data"]["key_id"], "key": None}
    hook_headers = {"Idempotency-Key": f"hook-{uuid.uuid4()}"}
    hook = owner.post(
        f"/v1/teams/{team['id']}/webhooks",
        json={"url": "https://example.com/hook"},
        headers=hook_headers,
    )
    assert hook.status_code == 201, hook.text
    secret = hook.json()["data"]["secret"]
    with psycopg.connect(api_settings.database_url_value()) as conn:
        stored = conn.execute("SELECT response::text FROM idempotency_records").fetchall()
    assert len(stored) == 2
    assert not any(key in text or secret in text for (text,) in stored)
