"""Malformed requests, table-driven: each gets its documented 4xx with the
error envelope, never a 500, and appends nothing to the event log.

One server for the whole table (each row a subtest): a server per row would
cost more than all the rows together.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import ip_network
from typing import Any, Final

import httpx
import psycopg
import pytest

from infra.event_store import head_position
from infra.settings import Settings
from tests.e2e.conftest import Api

MB: Final = 1_048_576
DEPTH: Final = 10_000
T: Final = "/v1/teams/{team}"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def forged(kind: str, *values: int | str) -> str:
    """A cursor of our shape with values we would never put in (stdlib JSON:
    orjson refuses integers past 64 bits)."""
    raw = json.dumps([kind, *values]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def chunked(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """The body with no Content-Length (chunked): the limit must count what arrives."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    path: str
    status: int
    code: str
    json: Any = None
    content: bytes | None = None
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    stream_body: bool = False

    def request(self, client: httpx.Client, ids: dict[str, str]) -> httpx.Response:
        url = self.path.format(**ids)
        kwargs: dict[str, Any] = {"params": self.params, "headers": self.headers}
        if self.json is not None:
            kwargs["json"] = self.json
        if self.content is not None:
            kwargs["content"] = chunked(self.content) if self.stream_body else self.content
        # Streamed, so an event stream that wrongly opened is closed, not read forever.
        with client.stream(self.method, url, **kwargs) as response:
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                response.read()
            return response


JSON: Final = {"Content-Type": "application/json"}
ENTRY: Final = {"title": "ok", "body": "fine"}

ROWS: Final = [
    # -- bodies that are not JSON, or not the JSON expected -----------------------------
    Row("truncated JSON", "POST", T + "/entries", 400, "MALFORMED",
        content=b'{"title": "x",', headers=JSON),
    Row("not UTF-8", "POST", T + "/entries", 400, "MALFORMED",
        content=b'{"title": "\xff\xfe"}', headers=JSON),
    Row("JSON with a trailing comma", "POST", T + "/members", 400, "MALFORMED",
        content=b'{"email": "a@example.com", "display_name": "a",}', headers=JSON),
    Row("a JSON array, not an object", "POST", T + "/entries", 422, "VALIDATION_ERROR",
        json=[ENTRY]),
    Row("JSON null", "POST", T + "/entries", 422, "VALIDATION_ERROR",
        content=b"null", headers=JSON),
    Row("no body at all", "POST", T + "/entries", 422, "VALIDATION_ERROR", headers=JSON),
    Row("text/plain body", "POST", T + "/entries", 422, "VALIDATION_ERROR",
        content=b'{"title": "x"}', headers={"Content-Type": "text/plain"}),
    Row("form-encoded body", "POST", T + "/entries", 422, "VALIDATION_ERROR",
        content=b"title=x&body=y",
        headers={"Content-Type": "application/x-www-form-urlencoded"}),
    # -- wrong types and values ---------------------------------------------------------
    Row("title is a number", "POST", T + "/entries", 422, "VALIDATION_ERROR",
        json={"title": 123}),
    Row("tags is a string", "POST", T + "/entries", 422, "VALIDATION_ERROR",
        json={"title": "x", "tags": "a,b"}),
    Row("unknown visibility", "POST", T + "/entries", 422, "VALIDATION_ERROR",
        json={"title": "x", "visibility": "public"}),
    Row("unknown field", "POST", T + "/entries", 422, "VALIDATION_ERROR",
        json={"title": "x", "colour": "red"}),
    Row("blank title", "POST", T + "/entries", 422, "VALIDATION_ERROR",
        json={"title": "   "}),
    Row("NUL in a title", "POST", T + "/entries", 422, "VALIDATION_ERROR",
        json={"title": "a\u0000b"}),
    Row("NUL in a member's name", "POST", T + "/members", 422, "VALIDATION_ERROR",
        json={"email": "n@example.com", "display_name": "nul\u0000"}),
    Row("NUL in a tag", "POST", T + "/entries", 422, "VALIDATION_ERROR",
        json={"title": "x", "tags": ["ok", "n\u0000"]}),
    Row("NUL in a pushed entry: that mutation fails", "POST", T + "/sync/push", 200, "",
        json={"mutations": [{"id": "m-nul", "name": "entry.create",
                             "args": {"title": "a\u0000b"}}]}),
    Row("NUL in a tag filter", "GET", T + "/entries", 422, "VALIDATION_ERROR",
        params={"tag": "a\u0000b"}),
    Row("role that does not exist", "POST", T + "/members", 422, "VALIDATION_ERROR",
        json={"email": "a@example.com", "display_name": "a", "role": "god"}),
    Row("push with no mutations", "POST", T + "/sync/push", 422, "VALIDATION_ERROR",
        json={"mutations": []}),
    Row("webhook overlap is a string", "POST", T + "/webhooks/{webhook}/rotate-secret",
        422, "VALIDATION_ERROR", json={"overlap_seconds": "a day"}),
    # -- sizes --------------------------------------------------------------------------
    Row("a 1 MB+ title", "POST", T + "/entries", 413, "PAYLOAD_TOO_LARGE",
        json={"title": "x" * (MB + 10)}),
    Row("a 1 MB+ body without Content-Length", "POST", T + "/entries", 413,
        "PAYLOAD_TOO_LARGE", content=b'{"title": "' + b"x" * (MB + 10) + b'"}',
        headers=JSON, stream_body=True),
    Row("a body over the field limit", "POST", T + "/entries", 422, "VALIDATION_ERROR",
        json={"title": "x", "body": "y" * 100_001}),
    Row("a 10,000-character title", "POST", T + "/entries", 422, "VALIDATION_ERROR",
        json={"title": "t" * 10_000}),
    Row("a 60 KB query string", "GET", T + "/entries", 422, "VALIDATION_ERROR",
        params={"tag": "x" * 60_000}),
    # -- deep nesting -------------------------------------------------------------------
    Row("10,000 levels of nested arrays", "POST", T + "/entries", 400, "MALFORMED",
        content=b'{"title": "x", "tags": ' + nested(DEPTH) + b"}", headers=JSON),
    Row("10,000 levels in a push's args", "POST", T + "/sync/push", 400, "MALFORMED",
        content=b'{"mutations": [{"id": "m1", "name": "entry.create", "args": {"title": '
        + nested(DEPTH) + b"}}]}", headers=JSON),
    Row("a 10,000-level body to a route with no body", "GET", T + "/entries", 200, "",
        content=nested(DEPTH), headers=JSON),
    # -- ids ----------------------------------------------------------------------------
    Row("entry id is not a UUID", "GET", T + "/entries/not-a-uuid", 422, "VALIDATION_ERROR"),
    Row("team id is not a UUID", "GET", "/v1/teams/12345/entries", 422, "VALIDATION_ERROR"),
    Row("edit of a non-UUID entry", "PATCH", T + "/entries/1%20OR%201=1", 422,
        "VALIDATION_ERROR", json={"title": "x"}),
    Row("a path that climbs out", "DELETE", T + "/members/..%2F..%2Fteams", 404, "NOT_FOUND"),
    Row("id in a body is not a UUID", "POST", T + "/entries", 422, "VALIDATION_ERROR",
        json={"id": "not-a-uuid", "title": "x"}),
    Row("API key id of the wrong shape", "GET", T + "/api-keys/ABC", 422, "VALIDATION_ERROR"),
    Row("author filter is not a UUID", "GET", T + "/entries", 422, "VALIDATION_ERROR",
        params={"author": "me"}),
    Row("audit stream id is not a UUID", "GET", T + "/audit/streams/xyz/events", 422,
        "VALIDATION_ERROR"),
    Row("delivery id is not a number", "GET", T + "/webhooks/{webhook}/deliveries/abc", 422,
        "VALIDATION_ERROR"),
    Row("delivery id past int64", "GET", T + "/webhooks/{webhook}/deliveries/" + "9" * 30,
        422, "VALIDATION_ERROR"),
    Row("notification id is negative", "GET", T + "/notifications/-1", 422,
        "VALIDATION_ERROR"),
    # -- cursors ------------------------------------------------------------------------
    Row("garbage entries cursor", "GET", T + "/entries", 400, "MALFORMED",
        params={"cursor": "not-a-cursor"}),
    Row("garbage members cursor", "GET", T + "/members", 400, "MALFORMED",
        params={"cursor": "eyJ4IjoxfQ"}),
    Row("garbage sync cursor", "GET", T + "/sync", 400, "MALFORMED",
        params={"cursor": "garbage"}),
    Row("garbage long-poll cursor", "GET", T + "/sync/poll", 400, "MALFORMED",
        params={"cursor": "%%%"}),
    Row("garbage stream cursor", "GET", T + "/sync/stream", 400, "MALFORMED",
        params={"cursor": "garbage"}),
    Row("garbage Last-Event-ID", "GET", T + "/sync/stream", 400, "MALFORMED",
        headers={"Last-Event-ID": "garbage"}),
    Row("garbage audit stream cursor", "GET", T + "/audit/streams/{team}/events", 400,
        "MALFORMED", params={"cursor": "zzz"}),
    Row("garbage activity cursor", "GET", T + "/audit/activity", 400, "MALFORMED",
        params={"cursor": "zzz"}),
    Row("garbage deliveries cursor", "GET", T + "/webhooks/{webhook}/deliveries", 400,
        "MALFORMED", params={"cursor": "zzz"}),
    # Cursors are opaque, but a client can still forge one of the right shape.
    Row("forged usage cursor with a NUL", "GET", T + "/usage", 400, "MALFORMED",
        params={"cursor": forged("usage", "2025-\u000001")}),
    Row("forged entries cursor past int64", "GET", T + "/entries", 400, "MALFORMED",
        params={"cursor": forged("entries", 2**70)}),
    Row("forged members cursor below int64", "GET", T + "/members", 400, "MALFORMED",
        params={"cursor": forged("members", -(2**70))}),
    Row("forged sync cursor past int64", "GET", T + "/sync", 400, "MALFORMED",
        params={"cursor": forged("sync", 2**64, 0, 0)}),
    Row("forged webhooks cursor past int64", "GET", T + "/webhooks", 400, "MALFORMED",
        params={"cursor": forged("webhooks", 2**63)}),
    Row("forged audit cursor of another stream", "GET", T + "/audit/streams/{team}/events",
        400, "MALFORMED", params={"cursor": forged("audit_history", "\u0000", 1)}),
    Row("a 500-character cursor", "GET", T + "/entries", 422, "VALIDATION_ERROR",
        params={"cursor": "c" * 500}),
    Row("event feed after a negative position", "GET", T + "/events", 422,
        "VALIDATION_ERROR", params={"after": -1}),
    Row("event feed after a word", "GET", T + "/events", 422, "VALIDATION_ERROR",
        params={"after": "start"}),
    # -- limits -------------------------------------------------------------------------
    Row("negative entries limit", "GET", T + "/entries", 422, "VALIDATION_ERROR",
        params={"limit": -1}),
    Row("zero entries limit", "GET", T + "/entries", 422, "VALIDATION_ERROR",
        params={"limit": 0}),
    Row("huge entries limit", "GET", T + "/entries", 422, "VALIDATION_ERROR",
        params={"limit": 10**30}),
    Row("fractional limit", "GET", T + "/members", 422, "VALIDATION_ERROR",
        params={"limit": "2.5"}),
    Row("negative sync limit", "GET", T + "/sync", 422, "VALIDATION_ERROR",
        params={"limit": -5}),
    Row("huge event feed limit", "GET", T + "/events", 422, "VALIDATION_ERROR",
        params={"limit": 10**12}),
    Row("negative long-poll wait", "GET", T + "/sync", 422, "VALIDATION_ERROR",
        params={"wait": -1}),
    Row("NaN long-poll wait", "GET", T + "/sync", 422, "VALIDATION_ERROR",
        params={"wait": "nan"}),
    Row("negative min_position", "GET", T + "/entries", 422, "VALIDATION_ERROR",
        params={"min_position": -1}),
    Row("huge Chronik-Min-Position", "GET", T + "/entries", 422, "VALIDATION_ERROR",
        headers={"Chronik-Min-Position": str(10**30)}),
    Row("audit state at version 0", "GET", T + "/audit/streams/{team}/state", 422,
        "VALIDATION_ERROR", params={"version": 0}),
    Row("webhook health window of a year", "GET", T + "/webhooks/{webhook}/health", 422,
        "VALIDATION_ERROR", params={"window_hours": 8760}),
    # -- headers and query shapes -------------------------------------------------------
    Row("If-Match that is no ETag", "PATCH", T + "/entries/{entry}", 400, "MALFORMED",
        json={"title": "x"}, headers={"If-Match": "yesterday"}),
    Row("Idempotency-Key with spaces", "POST", T + "/entries", 400, "MALFORMED",
        json=ENTRY, headers={"Idempotency-Key": "two words"}),
    Row("unknown event type filter", "GET", T + "/events", 422, "VALIDATION_ERROR",
        params={"types": "entry.exploded"}),
    Row("date that is no date", "GET", T + "/entries", 422, "VALIDATION_ERROR",
        params={"updated_after": "yesterday"}),
    Row("Unix time for a date", "GET", T + "/audit/activity", 422, "VALIDATION_ERROR",
        params={"from": "17489117"}),
    Row("Unix time in a body", "POST", T + "/webhooks/{webhook}/recover", 422,
        "VALIDATION_ERROR", json={"since": 1700000000}),
    Row("date without a zone", "GET", T + "/entries", 422, "VALIDATION_ERROR",
        params={"updated_after": "2025-01-01T00:00:00"}),
    Row("month out of range", "GET", T + "/usage/2025-13", 422, "VALIDATION_ERROR"),
    Row("unknown notification kind", "PATCH", T + "/notification-preferences/gossip", 422,
        "VALIDATION_ERROR", json={"email": True}),
]  # fmt: skip


@pytest.fixture
def api_settings(api_settings: Settings) -> Settings:
    # A webhook on loopback (never called: nothing it subscribes to happens here).
    return api_settings.model_copy(update={"webhook_allowed_networks": [ip_network("127.0.0.0/8")]})


@pytest.fixture
def head(api_settings: Settings) -> Iterator[Callable[[], int]]:
    """The event log's newest position, read straight from the store."""
    with psycopg.connect(api_settings.database_url_value(), autocommit=True) as conn:
        yield lambda: head_position(conn)


def test_names_are_unique() -> None:
    assert len({row.name for row in ROWS}) == len(ROWS)


def test_malformed_requests_get_their_4xx_envelope_and_append_nothing(
    api: Api, head: Callable[[], int], subtests: pytest.Subtests
) -> None:
    team = api.create_team(name="Malformed")
    owner = api.client(team["owner_key"], session=False)
    entry = owner.post(f"/v1/teams/{team['id']}/entries", json=ENTRY)
    assert entry.status_code == 201, entry.text
    hook = owner.post(f"/v1/teams/{team['id']}/webhooks", json={"url": "http://127.0.0.1:9/hook"})
    assert hook.status_code == 201, hook.text
    ids = {
        "team": team["id"],
        "entry": entry.json()["data"]["id"],
        "webhook": hook.json()["data"]["id"],
    }
    for row in ROWS:
        with subtests.test(row.name):
            before = head()
            response = row.request(owner, ids)
            assert response.status_code == row.status, response.text[:500]
            assert response.headers.get("x-request-id")
            if row.status >= 400:
                body = response.json()
                assert set(body) == {"error", "request_id"}, body
                assert body["error"]["code"] == row.code, body
                assert body["request_id"] == response.headers["x-request-id"]
            assert head() == before, "the request appended events"
