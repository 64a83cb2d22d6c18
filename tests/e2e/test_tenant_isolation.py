"""Tenant isolation as a property: for any small history of a few teams, with
members of every role, entries (private ones included), prompts and webhooks,
no read of a member of the first team ever shows an id or a piece of content
of another team, nor another member's private entry; and an id of theirs in
the URL answers exactly as an id that never existed.

Every GET route of the OpenAPI document is read, so a new route is covered
the day it is added (a path parameter this test has no ids for fails it); the
sync feed, its event stream, the event feed (pages and NDJSON), audit routes
and webhook deliveries included. ``CHRONIK_ISOLATION_EXAMPLES`` runs more
histories than the quick tier's few.
"""

from __future__ import annotations

import os
import secrets
import string
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import ip_network
from typing import Any, Final

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from infra.devstack.processes import wait_until
from infra.settings import Settings
from tests.e2e.conftest import OPERATOR_TOKEN, Api
from tests.webhook_receivers import Receiver, receiver

EXAMPLES: Final = int(os.environ.get("CHRONIK_ISOLATION_EXAMPLES", "4"))
ROLES: Final = ("owner", "admin", "member", "auditor")
WRITERS: Final = ("owner", "admin", "member")  # auditors write nothing
STREAM: Final = "/v1/teams/{team_id}/sync/stream"
STREAM_READ_SECONDS: Final = 1.5
# Variants read besides the plain GET (filters that widen what a list shows).
EXTRA_QUERIES: Final[dict[str, list[dict[str, str]]]] = {
    "/v1/teams/{team_id}/entries": [{"include_deleted": "true"}, {"visibility": "private"}],
    "/v1/teams/{team_id}/prompts": [{"include_archived": "true"}],
    "/v1/teams/{team_id}/webhooks/{webhook_id}/deliveries": [{"status": "succeeded,pending"}],
}
NDJSON_ROUTES: Final = {"/v1/teams/{team_id}/events"}


def marker(prefix: str) -> str:
    """A string that occurs nowhere else: found in a response, it came from here."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


# -- what a history is -------------------------------------------------------------------


@dataclass(frozen=True)
class EntryPlan:
    author: str
    visibility: str
    steps: tuple[str, ...]  # "edit", "make_private", "delete", applied in order


@dataclass(frozen=True)
class TeamPlan:
    entries: tuple[EntryPlan, ...]
    prompt: bool
    webhook: bool


entry_plans = st.builds(
    EntryPlan,
    author=st.sampled_from(WRITERS),
    visibility=st.sampled_from(("team", "private")),
    steps=st.lists(st.sampled_from(("edit", "make_private", "delete")), max_size=2).map(tuple),
)
team_plans = st.builds(
    TeamPlan,
    entries=st.lists(entry_plans, min_size=1, max_size=4).map(tuple),
    prompt=st.booleans(),
    webhook=st.booleans(),
)
histories = st.lists(team_plans, min_size=2, max_size=3)


@dataclass
class Member:
    role: str
    user_id: str
    key: str
    key_id: str


@dataclass
class Built:
    """A team as built: its ids and content, and what each member may not see."""

    id: str
    members: dict[str, Member] = field(default_factory=dict)
    entries: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    webhooks: list[str] = field(default_factory=list)
    deliveries: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)  # markers the team may see
    # Per author: ids and markers of their own private entries, never the team's.
    private_ids: dict[str, list[str]] = field(default_factory=dict)
    private_content: dict[str, list[str]] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)  # shown once, never read back
    inbox: dict[str, list[str]] = field(default_factory=dict)  # notification ids by role

    def ids(self) -> list[str]:
        members = [m.user_id for m in self.members.values()]
        keys = [m.key_id for m in self.members.values()]
        return [self.id, *members, *keys, *self.entries, *self.prompts, *self.webhooks]

    def aggregates(self) -> list[str]:
        return [self.id, *self.entries, *self.prompts, *self.webhooks]

    def hidden_from(self, role: str) -> list[str]:
        """What a member of this very team with ``role`` may not see."""
        return [
            s
            for author, found in (*self.private_ids.items(), *self.private_content.items())
            if author != role
            for s in found
        ]


# -- building it over HTTP ---------------------------------------------------------------


def _ok(response: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert response.status_code == status, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def build_team(api: Api, plan: TeamPlan, hook: Receiver) -> Built:
    with api.client(OPERATOR_TOKEN) as operator:
        created = _ok(
            operator.post(
                "/v1/teams",
                json={
                    "name": marker("team"),
                    "plan": "team",
                    "owner_email": f"{marker('own')}@example.com",
                    "owner_display_name": marker("owner"),
                },
            )
        )
    team = Built(created["id"])
    owner_key = created["owner_key"]
    team.members["owner"] = Member(
        "owner", created["owner_user_id"], owner_key, owner_key.split("_")[1]
    )
    team.secrets.append(owner_key.split("_", 2)[2])
    base = f"/v1/teams/{team.id}"
    owner = api.client(owner_key)
    if plan.webhook:
        # First, so the team's later events are delivered to it.
        description = marker("hook")
        registered = _ok(
            owner.post(
                f"{base}/webhooks",
                json={"url": hook.url, "event_types": [], "description": description},
            )
        )
        team.webhooks.append(registered["id"])
        team.secrets.append(registered["secret"])
        team.content.append(description)
    for role in ROLES[1:]:
        email, name = f"{marker('mail')}@example.com", marker("name")
        user_id = _ok(
            owner.post(f"{base}/members", json={"email": email, "display_name": name, "role": role})
        )["user_id"]
        key_name = marker("key")
        key = _ok(owner.post(f"{base}/api-keys", json={"user_id": user_id, "name": key_name}))
        team.members[role] = Member(role, user_id, key["key"], key["key_id"])
        team.secrets.append(key["key"].split("_", 2)[2])
        team.content += [email.split("@", maxsplit=1)[0], name, key_name]
    if plan.prompt:
        text = marker("prompt")
        team.prompts.append(_ok(owner.post(f"{base}/prompts", json={"text": text}))["id"])
        team.content.append(text)
    for entry in plan.entries:
        write_entry(api, team, entry)
    return team


def write_entry(api: Api, team: Built, plan: EntryPlan) -> None:
    author = api.client(team.members[plan.author].key)
    url = f"/v1/teams/{team.id}/entries"
    private = plan.visibility == "private"
    ever_team = not private
    title, body, tag = marker("title"), marker("body"), marker("tag")
    entry_id = _ok(
        author.post(
            url, json={"title": title, "body": body, "tags": [tag], "visibility": plan.visibility}
        )
    )["id"]
    written = [(private, title), (private, body), (private, tag)]
    for step in plan.steps:
        if step == "delete":
            _ok(author.delete(f"{url}/{entry_id}"), 200)
            break
        if step == "make_private":
            _ok(author.patch(f"{url}/{entry_id}", json={"visibility": "private"}), 200)
            private = True
        else:
            new_title = marker("edit")
            _ok(author.patch(f"{url}/{entry_id}", json={"title": new_title}), 200)
            written.append((private, new_title))
    # Entries never go back to the team here, so text written while private
    # stays the author's alone; text written before stays the team's.
    team.entries.append(entry_id)
    secret_text = [text for was_private, text in written if was_private]
    team.private_content.setdefault(plan.author, []).extend(secret_text)
    team.content += [text for was_private, text in written if not was_private]
    if not ever_team:
        team.private_ids.setdefault(plan.author, []).append(entry_id)


def wait_for_deliveries(api: Api, teams: list[Built]) -> None:
    """Every webhook has delivered its team's events (the member_added ones at least)."""
    for team in teams:
        owner = api.client(team.members["owner"].key)
        for webhook in team.webhooks:
            url = f"/v1/teams/{team.id}/webhooks/{webhook}/deliveries"
            found: list[str] = []

            def delivered(
                url: str = url, found: list[str] = found, owner: httpx.Client = owner
            ) -> bool:
                data = owner.get(url).json()["data"]
                found[:] = [str(d["id"]) for d in data]
                return bool(found)

            wait_until(delivered, timeout=30, what=f"deliveries of webhook {webhook}")
            team.deliveries += found


def collect_inboxes(api: Api, teams: list[Built]) -> None:
    """Whatever notifications each member has by now (the consumer fills
    inboxes a moment after the events; a later one only adds reads)."""
    for team in teams:
        for role, member in team.members.items():
            with api.client(member.key) as client:
                listed = client.get(f"/v1/teams/{team.id}/notifications", params={"limit": 200})
            assert listed.status_code == 200, listed.text
            team.inbox[role] = [str(n["id"]) for n in listed.json()["data"]]


# -- reading everything ------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    own: list[str]  # the caller's team's, visible or not
    foreign: list[str]  # must answer as if they never existed
    unknown: str | None  # one that never existed; None: no such thing (an enum)


def slot_for(name: str, schema: dict[str, Any], me: Built, role: str, others: list[Built]) -> Slot:
    mine_private = me.hidden_from(role)
    private_ids = [i for i in mine_private if i in me.entries]
    visible_entries = [e for e in me.entries if e not in private_ids]
    table: dict[str, Slot] = {
        "team_id": Slot([me.id], [t.id for t in others], str(uuid.uuid4())),
        "user_id": Slot(
            [m.user_id for m in me.members.values()],
            [m.user_id for t in others for m in t.members.values()],
            str(uuid.uuid4()),
        ),
        "key_id": Slot(
            [m.key_id for m in me.members.values()],
            [m.key_id for t in others for m in t.members.values()],
            "".join(secrets.choice(string.ascii_lowercase) for _ in range(16)),
        ),
        "entry_id": Slot(
            visible_entries, [e for t in others for e in t.entries] + private_ids, str(uuid.uuid4())
        ),
        "prompt_id": Slot(me.prompts, [p for t in others for p in t.prompts], str(uuid.uuid4())),
        "webhook_id": Slot(me.webhooks, [w for t in others for w in t.webhooks], str(uuid.uuid4())),
        "aggregate_id": Slot(
            [i for i in me.aggregates() if i not in private_ids],
            [i for t in others for i in t.aggregates()] + private_ids,
            str(uuid.uuid4()),
        ),
        "delivery_id": Slot(
            me.deliveries, [d for t in others for d in t.deliveries], str(9 * 10**15)
        ),
        "notification_id": Slot(
            me.inbox.get(role, []),
            [n for t in others for ids in t.inbox.values() for n in ids]
            + [n for r, ids in me.inbox.items() if r != role for n in ids],
            str(9 * 10**15),
        ),
        "month": Slot([datetime.now(UTC).strftime("%Y-%m")], [], None),
    }
    if name in table:
        return table[name]
    if "enum" in schema:
        return Slot([str(schema["enum"][0])], [], None)
    pytest.fail(f"no ids for the path parameter {name!r}: teach test_tenant_isolation about it")


@dataclass(frozen=True)
class Read:
    path: str  # the template
    url: str
    query: dict[str, str]
    headers: dict[str, str]
    slot: str | None  # the parameter varied from the base, if any
    kind: str  # "base", "own", "foreign", "unknown"


def reads_of(route: str, params: list[dict[str, Any]], slots: dict[str, Slot]) -> Iterator[Read]:
    """The base read (each parameter its team's first id, or an unknown one),
    then one parameter at a time: other ids of the team, every foreign one and
    an unknown one, so each answer can be set beside the unknown id's."""
    base: dict[str, str] = {}
    for p in params:
        slot = slots[p["name"]]
        value = slot.own[0] if slot.own else slot.unknown
        assert value is not None
        base[p["name"]] = value

    def read(values: dict[str, str], slot: str | None, kind: str, **extra: Any) -> Read:
        return Read(
            route,
            route.format(**values),
            extra.get("query", {}),
            extra.get("headers", {}),
            slot,
            kind,
        )

    yield read(base, None, "base")
    for query in EXTRA_QUERIES.get(route, []):
        yield read(base, None, "base", query=query)
    if route in NDJSON_ROUTES:
        yield read(base, None, "base", headers={"Accept": "application/x-ndjson"})
    for name, slot in slots.items():
        if name not in base:
            continue
        variants = [("own", v) for v in slot.own[1:3]] + [("foreign", v) for v in slot.foreign]
        if slot.unknown is not None:
            variants.append(("unknown", slot.unknown))
        for kind, value in variants:
            yield read({**base, name: value}, name, kind)


def fetch(client: httpx.Client, read: Read) -> tuple[int, str]:
    if read.path != STREAM:
        response = client.get(read.url, params=read.query, headers=read.headers)
        return response.status_code, response.text
    # An endless stream: read what it sends within a moment, then hang up.
    chunks: list[str] = []
    with client.stream("GET", read.url, params=read.query, headers=read.headers) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, response.text
        deadline = time.monotonic() + STREAM_READ_SECONDS
        for chunk in response.iter_text():
            chunks.append(chunk)
            if "event: changes" in "".join(chunks) or time.monotonic() > deadline:
                break
    return 200, "".join(chunks)


def get_routes(openapi: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    routes = []
    for path, operations in openapi["paths"].items():
        if "get" in operations:
            params = [p for p in operations["get"].get("parameters", []) if p["in"] == "path"]
            routes.append((path, params))
    return routes


def check_member(
    api: Api, openapi: dict[str, Any], me: Built, role: str, others: list[Built]
) -> list[str]:
    """Every GET route as ``role`` of ``me``: the problems found, and that the
    reads did reach the data (else finding nothing would prove nothing)."""
    forbidden = [s for t in others for s in (*t.ids(), *t.content, *t.hidden_from(""))]
    forbidden += me.hidden_from(role)
    never = [s for t in (me, *others) for s in t.secrets]  # no read shows a secret
    problems: list[str] = []
    seen: list[str] = []
    # The session's reads wait for its writes (Chronik-Min-Position).
    with api.client(me.members[role].key) as client:
        for route, params in get_routes(openapi):
            slots = {
                p["name"]: slot_for(p["name"], p.get("schema", {}), me, role, others)
                for p in params
            }
            answers: dict[tuple[str | None, str], list[tuple[Read, int]]] = {}
            for read in reads_of(route, params, slots):
                status, text = fetch(client, read)
                seen.append(text)
                answers.setdefault((read.slot, read.kind), []).append((read, status))
                # An id the caller sent may come back (e.g. in a 404): it knew it.
                leaked = [s for s in forbidden if s in text and s not in read.url]
                leaked += [s for s in never if s in text]
                if leaked:
                    problems.append(f"{role} GET {read.url} {read.query} -> {status}: {leaked}")
                # 503 is a documented answer (a saturated database); 500 never is.
                if read.kind == "base" and status == 500:
                    problems.append(f"{role} GET {read.url} -> {status}: {text[:200]}")
            for (slot_name, kind), found in answers.items():
                if kind != "foreign":
                    continue
                unknown = answers[(slot_name, "unknown")][0][1]
                for read, status in found:
                    if status != unknown:
                        problems.append(
                            f"{role} GET {read.url}: {status} for another's id, "
                            f"{unknown} for an unknown one"
                        )
    everything = "\n".join(seen)
    # The owner reads all the team's content somewhere (history included); each
    # author reads their own private entries.
    expected = me.content if role == "owner" else me.private_content.get(role, [])
    missing = [s for s in expected if s not in everything]
    if missing:
        problems.append(f"{role} never read the team's own {missing}: the reads prove nothing")
    return problems


@pytest.fixture
def api_settings(api_settings: Settings) -> Settings:
    # Webhook receivers run on loopback.
    return api_settings.model_copy(
        update={
            "webhook_allowed_networks": [ip_network("127.0.0.0/8")],
            "webhook_retry_schedule": [0.0, 0.2],
        }
    )


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as target:
        yield target


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # No shrinking: each history costs seconds of HTTP, and the failure lists
    # every leaking read with its URL already.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plans=histories)
def test_no_read_shows_another_teams_or_members_data(
    api: Api, fanout: None, hook: Receiver, plans: list[TeamPlan]
) -> None:
    teams = [build_team(api, plan, hook) for plan in plans]
    wait_for_deliveries(api, teams)
    collect_inboxes(api, teams)
    openapi = httpx.get(f"{api.base_url}/openapi.json").json()
    me, others = teams[0], teams[1:]
    problems = [p for role in ROLES for p in check_member(api, openapi, me, role, others)]
    assert not problems, "\n".join(problems[:40])
