"""Audit reads over HTTP: one aggregate's history with its metadata, its state
at a version or a time, who did what; who may read them; private entries and
secrets never leak."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from psycopg import sql

from infra.settings import Settings
from projections.registry import schema_of
from tests.e2e.conftest import Api


def _base(team: dict[str, Any]) -> str:
    return f"/v1/teams/{team['id']}"


def _events_url(team: dict[str, Any], aggregate_id: str) -> str:
    return f"{_base(team)}/audit/streams/{aggregate_id}/events"


def _state_url(team: dict[str, Any], aggregate_id: str) -> str:
    return f"{_base(team)}/audit/streams/{aggregate_id}/state"


def _member(api: Api, team: dict[str, Any], name: str, role: str) -> tuple[str, str]:
    """A new member's (key, user id)."""
    owner = api.client(team["owner_key"])
    added = owner.post(
        f"{_base(team)}/members",
        json={"email": f"{name}@example.com", "display_name": name, "role": role},
    )
    assert added.status_code == 201, added.text
    user_id: str = added.json()["data"]["user_id"]
    issued = owner.post(f"{_base(team)}/api-keys", json={"user_id": user_id, "name": name})
    assert issued.status_code == 201, issued.text
    key: str = issued.json()["data"]["key"]
    return key, user_id


def _pages(
    client: httpx.Client, url: str, limit: int = 200, **params: Any
) -> list[list[dict[str, Any]]]:
    """Every page of a list, following next_cursor (the project's list contract)."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = client.get(url, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(body["data"]) == limit


def _history(client: httpx.Client, url: str, limit: int = 200) -> list[dict[str, Any]]:
    """Every event of a stream, oldest first."""
    return [e for page in _pages(client, url, limit) for e in page]


def _activity(client: httpx.Client, team: dict[str, Any], **params: Any) -> list[dict[str, Any]]:
    url = f"{_base(team)}/audit/activity"
    return [e for page in _pages(client, url, **params) for e in page]


def _error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error", "request_id"}, body
    return response.status_code, body["error"]["code"]


def _stored_strings(settings: Settings, topic_suffix: str, *fields: str) -> list[str]:
    """Values of ``fields`` in the stored events whose topic ends with ``topic_suffix``."""
    with psycopg.connect(settings.database_url_value()) as conn:
        rows = conn.execute(
            "SELECT state FROM chronik_events WHERE topic LIKE %s", (f"%{topic_suffix}",)
        ).fetchall()
    found = [orjson.loads(bytes(row[0])) for row in rows]
    return [str(state[f]) for state in found for f in fields if state.get(f)]


def test_an_entry_s_history_names_who_when_and_through_which_command(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    entries = f"{_base(team)}/entries"
    created = owner.post(
        entries,
        json={"title": "v1", "tags": ["a"]},
        headers={"Idempotency-Key": "create-v1", "X-Correlation-Id": "corr-42"},
    )
    assert created.status_code == 201, created.text
    entry_id = created.json()["data"]["id"]
    edits = [owner.patch(f"{entries}/{entry_id}", json={"title": f"v{n}"}) for n in (2, 3, 4)]
    owner.delete(f"{entries}/{entry_id}")
    url = _events_url(team, entry_id)

    first = owner.get(url, params={"limit": 2})
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body) == {"aggregate", "data", "next_cursor"}
    assert body["aggregate"] == {"id": entry_id, "type": "entry"}
    assert [e["aggregate_version"] for e in body["data"]] == [1, 2]
    assert isinstance(body["next_cursor"], str)
    assert [len(page) for page in _pages(owner, url, limit=2)] == [2, 2, 1]
    events = _history(owner, url, limit=2)
    assert [e["aggregate_version"] for e in events] == [1, 2, 3, 4, 5]
    assert [e["type"] for e in events] == ["entry.created"] + ["entry.edited"] * 3 + [
        "entry.deleted"
    ]
    positions = [e["position"] for e in events]
    assert positions == sorted(positions)
    # A create's position is its last event's (the month's quota is counted with it).
    assert positions[0] <= created.json()["position"] < positions[1]
    assert positions[1:4] == [e.json()["position"] for e in edits]
    assert [e["data"].get("title") for e in events[:4]] == ["v1", "v2", "v3", "v4"]
    assert events[0]["data"]["tags"] == ["a"]

    me = owner.get("/v1/me").json()
    made = events[0]
    assert made["actor"] == {"user_id": me["user_id"], "key_id": me["key_id"]}
    assert made["metadata"]["command"]
    assert made["metadata"]["idempotency_key"] == "create-v1"
    assert made["metadata"]["correlation_id"] == "corr-42"
    assert made["metadata"]["request_id"] == created.headers["X-Request-Id"]
    assert made["metadata"]["team_id"] == team["id"]
    assert events[1]["metadata"]["request_id"] == edits[0].headers["X-Request-Id"]
    assert datetime.fromisoformat(made["occurred_at"]).tzinfo is not None

    whole = owner.get(url).json()  # default limit 50
    assert (whole["data"], whole["next_cursor"]) == (events, None)
    exact = owner.get(url, params={"limit": 5}).json()
    assert (len(exact["data"]), exact["next_cursor"]) == (5, None)


def test_state_at_a_version_at_a_time_and_now(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    entries = f"{_base(team)}/entries"
    entry_id = owner.post(entries, json={"title": "v1", "body": "b"}).json()["data"]["id"]
    for n in (2, 3):
        owner.patch(f"{entries}/{entry_id}", json={"title": f"v{n}"})
    url = _state_url(team, entry_id)
    events = _history(owner, _events_url(team, entry_id))

    latest = owner.get(url)
    assert latest.status_code == 200, latest.text
    data = latest.json()["data"]
    assert (data["aggregate_id"], data["type"], data["version"]) == (entry_id, "entry", 3)
    assert latest.headers["ETag"] == '"3"'
    assert data["as_of"] == events[2]["occurred_at"]
    assert data["state"]["title"] == "v3"
    assert set(data["state"]) == {
        "id", "created_at", "team_id", "author_id", "title", "body", "tags", "visibility",
        "prompt_id", "deleted_at",
    }  # fmt: skip
    # The read model agrees with the event store on the latest state.
    current = owner.get(f"{entries}/{entry_id}").json()["data"]
    assert {k: data["state"][k] for k in ("title", "body", "tags", "visibility")} == {
        k: current[k] for k in ("title", "body", "tags", "visibility")
    }

    for version in (1, 2):
        at = owner.get(url, params={"version": version}).json()["data"]
        assert (at["version"], at["state"]["title"]) == (version, f"v{version}")
        assert at["as_of"] == events[version - 1]["occurred_at"]
    second = datetime.fromisoformat(events[1]["occurred_at"])
    for moment, version in (
        (second, 2),
        (second + timedelta(microseconds=1), 2),
        (datetime.fromisoformat(events[2]["occurred_at"]) + timedelta(days=1), 3),
    ):
        at = owner.get(url, params={"at": moment.isoformat()})
        assert at.status_code == 200, at.text
        assert at.json()["data"]["version"] == version

    before = datetime.fromisoformat(events[0]["occurred_at"]) - timedelta(microseconds=1)
    too_early = owner.get(url, params={"at": before.isoformat()})
    assert _error(too_early) == (404, "NOT_FOUND")
    assert too_early.json()["error"]["details"]["created_at"] == events[0]["occurred_at"]
    too_new = owner.get(url, params={"version": 4})
    assert _error(too_new) == (404, "NOT_FOUND")
    assert too_new.json()["error"]["details"]["latest_version"] == 3  # visible: no secret
    invalid: list[dict[str, str | int]] = [
        {"version": 1, "at": second.isoformat()},
        {"version": 0},
        {"version": "x"},
        {"at": "2026-01-01T00:00:00"},  # no offset
        {"at": "yesterday"},
    ]
    for bad in invalid:
        assert _error(owner.get(url, params=bad)) == (422, "VALIDATION_ERROR"), bad


def test_every_aggregate_type_has_a_state_and_no_secret_ever_shows(
    api: Api, api_settings: Settings
) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    auditor_key, _ = _member(api, team, "audrey", "auditor")
    auditor = api.client(auditor_key)
    base = _base(team)
    hook = owner.post(f"{base}/webhooks", json={"url": "https://hooks.example.com/in"})
    assert hook.status_code == 201, hook.text
    hook_id, first_secret = hook.json()["data"]["id"], hook.json()["data"]["secret"]
    rotated = owner.post(f"{base}/webhooks/{hook_id}/rotate-secret", json={})
    assert rotated.status_code == 200, rotated.text
    prompt_id = owner.post(f"{base}/prompts", json={"text": "How was it?"}).json()["data"]["id"]
    owner.post(f"{base}/entries", json={"title": "counted"})

    key_hashes = _stored_strings(api_settings, "ApiKeyIssued", "secret_hash")
    secret_ids = _stored_strings(api_settings, "Registered", "secret_id") + _stored_strings(
        api_settings, "SecretRotated", "new_secret_id", "previous_secret_id"
    )
    assert key_hashes
    assert len(secret_ids) >= 3
    forbidden = [*key_hashes, *secret_ids, first_secret, "secret_hash", "secret_id", "whsec_"]

    with psycopg.connect(api_settings.database_url_value()) as conn:
        row = conn.execute(
            "SELECT originator_id FROM chronik_events WHERE topic LIKE %s LIMIT 1",
            ("%MonthlyQuota.Started",),
        ).fetchone()
    assert row is not None
    quota_id = str(row[0])

    states: dict[str, dict[str, Any]] = {}
    for aggregate_id, kind in (
        (team["id"], "team"),
        (hook_id, "webhook"),
        (prompt_id, "prompt"),
        (quota_id, "quota"),
    ):
        history = auditor.get(_events_url(team, aggregate_id), params={"limit": 200})
        state = auditor.get(_state_url(team, aggregate_id))
        for response in (history, state):
            assert response.status_code == 200, response.text
            for secret in forbidden:
                assert secret not in response.text, (kind, secret)
        assert history.json()["aggregate"]["type"] == kind
        assert state.json()["data"]["type"] == kind
        states[kind] = state.json()["data"]["state"]

    assert {m["role"] for m in states["team"]["members"]} == {"owner", "auditor"}
    assert all(
        set(k) == {"key_id", "user_id", "name", "revoked"} for k in states["team"]["api_keys"]
    )
    assert [len(s["fingerprint"]) > 0 for s in states["webhook"]["secrets"]] == [True, True]
    assert states["webhook"]["secrets"][0]["valid_until"] is not None
    assert states["prompt"]["text"] == "How was it?"
    assert (states["quota"]["team_id"], states["quota"]["used"]) == (team["id"], 1)
    quota_types = [e["type"] for e in auditor.get(_events_url(team, quota_id)).json()["data"]]
    assert quota_types == ["quota.started", "quota.entry_counted"]
    team_types = [e["type"] for e in _history(auditor, _events_url(team, team["id"]))]
    assert team_types[0] == "team.created"
    assert "team.api_key_issued" in team_types


def test_only_owners_admins_and_auditors_of_the_team_may_read(api: Api) -> None:
    team = api.create_team(name="Ours")
    other = api.create_team(name="Theirs")
    owner = api.client(team["owner_key"])
    entry_id = owner.post(f"{_base(team)}/entries", json={"title": "t"}).json()["data"]["id"]
    theirs = api.client(other["owner_key"])
    their_entry = theirs.post(f"{_base(other)}/entries", json={"title": "x"}).json()["data"]["id"]
    activity = f"{_base(team)}/audit/activity"
    ours = (_events_url(team, entry_id), _state_url(team, entry_id), activity)

    for role in ("admin", "auditor"):
        reader = api.client(_member(api, team, role, role)[0])
        for url in ours:
            assert reader.get(url).status_code == 200, (role, url)
    member = api.client(_member(api, team, "mia", "member")[0])
    for url in ours:
        response = member.get(url)
        assert _error(response) == (403, "FORBIDDEN"), url
    for url in ours:
        assert _error(theirs.get(url)) == (404, "NOT_FOUND"), url
        assert _error(api.client().get(url)) == (401, "UNAUTHENTICATED"), url
    # Another team's aggregate (entry, or the team itself), or none, under our URL.
    for aggregate_id in (their_entry, other["id"], str(uuid.uuid4())):
        for url in (_events_url(team, aggregate_id), _state_url(team, aggregate_id)):
            response = owner.get(url)
            assert _error(response) == (404, "NOT_FOUND"), url
            assert their_entry not in response.text
    bad = owner.get(_events_url(team, "not-a-uuid"))
    assert _error(bad) == (422, "VALIDATION_ERROR")
    for url in (_events_url(team, entry_id), activity):
        for params in ({"limit": 0}, {"limit": 201}, {"cursor": "x" * 201}):
            response = owner.get(url, params=params)
            assert _error(response) == (422, "VALIDATION_ERROR"), (url, params)
        for cursor in ("not-ours", "WzFd"):
            response = owner.get(url, params={"cursor": cursor})
            assert _error(response) == (400, "MALFORMED"), (url, cursor)
    # A history's cursor is its stream's own, and no other list's.
    second = owner.post(f"{_base(team)}/entries", json={"title": "u"}).json()["data"]["id"]
    owner.patch(f"{_base(team)}/entries/{entry_id}", json={"title": "t2"})
    cursor = owner.get(_events_url(team, entry_id), params={"limit": 1}).json()["next_cursor"]
    assert cursor is not None
    for url in (_events_url(team, second), activity):
        response = owner.get(url, params={"cursor": cursor})
        assert _error(response) == (400, "MALFORMED"), url


def _quota_ids(settings: Settings, team_id: str) -> list[str]:
    with psycopg.connect(settings.database_url_value()) as conn:
        rows = conn.execute(
            "SELECT originator_id, state FROM chronik_events WHERE topic LIKE %s",
            ("%MonthlyQuota.Started",),
        ).fetchall()
    return [str(row[0]) for row in rows if orjson.loads(bytes(row[1]))["team_id"] == team_id]


def test_a_private_entry_is_its_author_s_alone(api: Api, api_settings: Settings) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    admin_key, admin_id = _member(api, team, "ada", "admin")
    ada = api.client(admin_key)
    auditor = api.client(_member(api, team, "audrey", "auditor")[0])
    entries = f"{_base(team)}/entries"
    diary = ada.post(entries, json={"title": "diary", "visibility": "private"}).json()["data"]
    never = ada.post(entries, json={"title": "never shared", "visibility": "private"})
    never_id = never.json()["data"]["id"]
    ada.patch(f"{entries}/{never_id}", json={"body": "very secret thoughts"})
    url = f"{entries}/{diary['id']}"
    ada.patch(url, json={"body": "hidden 2"})  # v2, private
    ada.patch(url, json={"visibility": "team"})  # v3, the team's from here
    ada.patch(url, json={"body": "shared 4"})  # v4
    ada.patch(url, json={"visibility": "private"})  # v5, private from here
    ada.patch(url, json={"body": "hidden 6"})  # v6

    author_view = _history(ada, _events_url(team, diary["id"]))
    assert [e["aggregate_version"] for e in author_view] == [1, 2, 3, 4, 5, 6]
    for reader in (owner, auditor):
        seen = _history(reader, _events_url(team, diary["id"]), limit=1)
        assert [e["aggregate_version"] for e in seen] == [3, 4]
        assert "hidden" not in str(seen)
        state = _state_url(team, diary["id"])
        for version in (1, 2, 5, 6):
            assert _error(reader.get(state, params={"version": version})) == (404, "NOT_FOUND")
        assert _error(reader.get(state)) == (404, "NOT_FOUND")  # private now
        shared = reader.get(state, params={"version": 4}).json()["data"]
        assert shared["state"]["body"] == "shared 4"
        for url_ in (_events_url(team, never_id), _state_url(team, never_id)):
            response = reader.get(url_)
            assert _error(response) == (404, "NOT_FOUND")
            assert "secret thoughts" not in response.text
    assert ada.get(_state_url(team, never_id)).json()["data"]["state"]["body"] == (
        "very secret thoughts"
    )

    # Past the latest version, which the reader may not see: no count of versions.
    for reader in (owner, auditor):
        for version in (7, 8, 1000):
            past = reader.get(_state_url(team, diary["id"]), params={"version": version})
            assert _error(past) == (404, "NOT_FOUND")
            assert "details" not in past.json()["error"]
            hidden = reader.get(_state_url(team, diary["id"]), params={"version": 6})
            assert past.json()["error"]["message"] == hidden.json()["error"]["message"]
    mine = ada.get(_state_url(team, diary["id"]), params={"version": 7})
    assert mine.json()["error"]["details"] == {"latest_version": 6}

    # The month's quota counted both entries, but names neither them nor who wrote
    # them, nor through which command or request.
    ada_key_id = ada.get("/v1/me").json()["key_id"]
    quota_ids = _quota_ids(api_settings, team["id"])
    assert quota_ids
    for quota_id in quota_ids:
        counted = owner.get(_events_url(team, quota_id))
        assert counted.status_code == 200, counted.text
        assert "quota.entry_counted" in counted.text
        for secret in (never_id, diary["id"], admin_id, ada_key_id, never.headers["X-Request-Id"]):
            assert secret not in counted.text
        items = counted.json()["data"]
        assert {i["type"] for i in items} == {"quota.started", "quota.entry_counted"}
        for item in items:
            assert (item["actor"], item["metadata"]) == (None, {"team_id": team["id"]})
            assert item["occurred_at"]

    theirs = _activity(owner, team, actor=admin_id)
    assert [
        (e["aggregate_id"], e["aggregate_version"])
        for e in theirs
        if e["type"].startswith("entry.")
    ] == [(diary["id"], 3), (diary["id"], 4)]
    assert never_id not in str(theirs)
    own = _activity(ada, team, actor=admin_id)
    assert sum(e["aggregate_id"] == never_id for e in own) == 2


def test_activity_says_who_did_what_filtered_and_paged(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    admin_key, admin_id = _member(api, team, "ada", "admin")
    ada = api.client(admin_key)
    entries = f"{_base(team)}/entries"
    for n in range(3):
        owner.post(entries, json={"title": f"owner {n}"})
        ada.post(entries, json={"title": f"ada {n}"})
    entry_id = ada.post(entries, json={"title": "edited"}).json()["data"]["id"]
    edited = ada.patch(
        f"{entries}/{entry_id}", json={"title": "edited!"}, headers={"X-Correlation-Id": "c-9"}
    )
    url = f"{_base(team)}/audit/activity"

    everything = owner.get(url, params={"limit": 200}).json()
    assert set(everything) == {"data", "next_cursor"}
    assert everything["next_cursor"] is None
    events = everything["data"]
    positions = [e["position"] for e in events]
    assert positions == sorted(set(positions))
    assert events[0]["type"] == "team.created"
    # The public document, plus its metadata.
    public = owner.get(f"{_base(team)}/events", params={"limit": 1000}).json()["data"]
    assert len(public) < 50  # so the default page (50) holds them all
    assert owner.get(url).json() == everything
    assert [{k: v for k, v in e.items() if k != "metadata"} for e in events] == public
    last = events[-1]
    assert last["type"] == "entry.edited"
    assert last["metadata"]["correlation_id"] == "c-9"
    assert last["metadata"]["request_id"] == edited.headers["X-Request-Id"]

    ada_did = owner.get(url, params={"actor": admin_id}).json()["data"]
    assert [e["data"].get("title") for e in ada_did if e["type"].startswith("entry.")] == [
        "ada 0", "ada 1", "ada 2", "edited", "edited!",
    ]  # fmt: skip
    assert {e["actor"]["user_id"] for e in ada_did} == {admin_id}

    spellings = [
        httpx.QueryParams([("types", "entry.created,entry.edited")]),
        httpx.QueryParams([("types", "entry.created"), ("types", "entry.edited")]),
    ]
    for spelling in spellings:
        typed = owner.get(url, params=spelling).json()["data"]
        assert [e["type"] for e in typed] == ["entry.created"] * 7 + ["entry.edited"]
    mixed = owner.get(url, params=[("types", "entry.edited,team.created"), ("actor", admin_id)])
    assert [e["type"] for e in mixed.json()["data"]] == ["entry.edited"]

    times = [datetime.fromisoformat(e["occurred_at"]) for e in events]
    start, end = times[3], times[-2]
    window = owner.get(url, params={"from": start.isoformat(), "to": end.isoformat()})
    assert [e["position"] for e in window.json()["data"]] == [
        e["position"] for e, t in zip(events, times, strict=True) if start <= t < end
    ]

    pages = _pages(owner, url, limit=4)
    assert [e for page in pages for e in page] == events
    assert len(pages) == -(-len(events) // 4)
    # Filters apply on every page; the cursor only says where the last one ended.
    typed_pages = _pages(owner, url, limit=3, types="entry.created", actor=admin_id)
    assert [e["data"]["title"] for page in typed_pages for e in page] == [
        "ada 0", "ada 1", "ada 2", "edited",
    ]  # fmt: skip

    invalid: list[dict[str, str | int]] = [
        {"types": "entry.exploded"},
        {"from": end.isoformat(), "to": start.isoformat()},
        {"from": "2026-01-01T00:00:00"},
        {"actor": "nobody"},
        {"limit": 201},
        {"limit": 0},
    ]
    for bad in invalid:
        assert _error(owner.get(url, params=bad)) == (422, "VALIDATION_ERROR"), bad


def test_activity_answers_503_while_its_index_is_being_built(
    api: Api, api_settings: Settings
) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    url = f"{_base(team)}/audit/activity"
    assert owner.get(url).status_code == 200
    # While the event feed's version-2 generation is built, the live view is the
    # version-1 table: no actor_user_id, occurred_at nor metadata.
    with psycopg.connect(api_settings.database_url_value(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT id FROM projection_generations WHERE projection = 'event_feed'"
            " AND state = 'active'"
        ).fetchone()
        assert row is not None
        conn.execute("DROP VIEW reads.public_events")
        conn.execute(
            sql.SQL(
                "CREATE VIEW reads.public_events AS"
                " SELECT position, team_id, type, aggregate_id, visible_to, doc FROM {}"
            ).format(sql.Identifier(schema_of(row[0]), "public_events"))
        )
    response = owner.get(url)
    assert _error(response) == (503, "UNAVAILABLE")
    assert response.headers["Retry-After"] == "5"
    assert "activity index is being built" in response.json()["error"]["message"]
    assert "column" not in response.text  # no internals
    assert owner.get(f"{_base(team)}/events").status_code == 200


@pytest.mark.parametrize("route", ["events", "state"])
def test_unknown_streams_answer_404_with_the_envelope(api: Api, route: str) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    response = owner.get(f"{_base(team)}/audit/streams/{uuid.uuid4()}/{route}")
    assert _error(response) == (404, "NOT_FOUND")
    assert response.headers["X-Request-Id"] == response.json()["request_id"]
