"""Live sync over HTTP against the real server: SSE streams and long-poll."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from api.routes import sync_stream
from api.sse import streams
from tests.e2e.conftest import Api

# Heartbeats make every blocking read return quickly, so deadlines are checked.
HEARTBEAT = 0.2
DEADLINE = 20.0


@pytest.fixture(autouse=True)
def _fast_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    # The server runs in this process: the route reads the constant at use.
    monkeypatch.setattr(sync_stream, "HEARTBEAT_SECONDS", HEARTBEAT)


@dataclass(frozen=True)
class Event:
    event: str
    id: str | None
    data: dict[str, Any]


def _items(response: httpx.Response) -> Iterator[Event | str]:
    """Events, and comments as plain strings, as an EventSource parses them."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in response.iter_lines():
        if not line:
            if data:
                payload = orjson.loads("\n".join(data))
                yield Event(fields.get("event", "message"), fields.get("id"), payload)
            fields, data = {}, []
        elif line.startswith(":"):
            yield line[1:].strip()
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value


class Stream:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.items = _items(response)
        self.last_id: str | None = None
        self.entries: list[str] = []  # entry ids in arrival order, repeats kept

    def next(self, deadline: float) -> Event | str:
        assert time.monotonic() < deadline, "the stream did not deliver in time"
        item = next(self.items)
        if isinstance(item, Event) and item.event == "changes":
            self.last_id = item.id
            self.entries += [c["id"] for c in item.data["changes"] if c["entity"] == "entry"]
        return item

    def rest(self) -> list[Event | str]:
        """Everything until the server ends the body."""
        deadline = time.monotonic() + DEADLINE
        rest: list[Event | str] = []
        while True:
            try:
                rest.append(self.next(deadline))
            except StopIteration:
                return rest

    def read_until_entries(self, wanted: set[str]) -> None:
        deadline = time.monotonic() + DEADLINE
        while not wanted <= set(self.entries):
            self.next(deadline)


@contextmanager
def _stream(
    client: httpx.Client, team_id: str, *, last_event_id: str | None = None, **params: str
) -> Iterator[Stream]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    url = f"/v1/teams/{team_id}/sync/stream"
    with client.stream("GET", url, params=params, headers=headers, timeout=10) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)


def _new_entries(client: httpx.Client, team_id: str, count: int, prefix: str) -> list[str]:
    ids = []
    for n in range(count):
        created = client.post(f"/v1/teams/{team_id}/entries", json={"title": f"{prefix} {n}"})
        assert created.status_code == 201, created.text
        ids.append(created.json()["data"]["id"])
    return ids


def _caught_up_cursor(api: Api, client: httpx.Client, team_id: str) -> str:
    """The cursor after every change written so far through ``api``'s sessions:
    the first page waits for the sync projection to reach them (a client
    without a session sends no min_position of its own)."""
    cursor: str | None = None
    while True:
        params = {"cursor": cursor} if cursor else {"min_position": api.last_position[0]}
        page = client.get(f"/v1/teams/{team_id}/sync", params=params).json()
        cursor = page["cursor"]
        if not page["has_more"]:
            assert isinstance(cursor, str)
            return cursor


def test_a_stream_delivers_changes_made_after_it_connected(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    with _stream(api.client(team["owner_key"], session=False), team["id"]) as stream:
        # The headers came after the first page was read: these are later changes.
        ids = _new_entries(owner, team["id"], 3, "live")
        stream.read_until_entries(set(ids))
    assert sorted(stream.entries) == sorted(ids)


def test_a_resumed_stream_misses_nothing_and_repeats_nothing(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    reader = api.client(team["owner_key"], session=False)
    written = _new_entries(owner, team["id"], 4, "before")
    with _stream(reader, team["id"]) as first:
        written += _new_entries(owner, team["id"], 4, "during")
        # Leave after the first event with an entry: the rest is still to come.
        deadline = time.monotonic() + DEADLINE
        while not first.entries:
            first.next(deadline)
    assert first.last_id is not None
    written += _new_entries(owner, team["id"], 4, "while away")
    with _stream(reader, team["id"], last_event_id=first.last_id) as resumed:
        written += _new_entries(owner, team["id"], 4, "after")
        resumed.read_until_entries(set(written) - set(first.entries))
    received = Counter(first.entries + resumed.entries)
    assert set(received) == set(written)
    assert max(received.values()) == 1, received


def test_last_event_id_wins_over_the_cursor_and_bad_cursors_get_the_envelope(api: Api) -> None:
    team = api.create_team()
    client = api.client(team["owner_key"], session=False)
    cursor = _caught_up_cursor(api, client, team["id"])
    with _stream(client, team["id"], last_event_id=cursor, cursor="not-a-cursor") as stream:
        assert stream.next(time.monotonic() + DEADLINE) == "heartbeat"
    bad = client.get(f"/v1/teams/{team['id']}/sync/stream", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "MALFORMED"
    anonymous = api.client(session=False).get(f"/v1/teams/{team['id']}/sync/stream")
    assert anonymous.status_code == 401


def test_silence_is_filled_with_heartbeats(api: Api) -> None:
    team = api.create_team()
    client = api.client(team["owner_key"], session=False)
    with _stream(client, team["id"], cursor=_caught_up_cursor(api, client, team["id"])) as stream:
        deadline = time.monotonic() + DEADLINE
        heartbeats = [item for item in (stream.next(deadline) for _ in range(3))]
    # Caught up and nothing written: only heartbeats.
    assert heartbeats == ["heartbeat"] * 3


def test_long_poll_returns_as_soon_as_a_change_arrives(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    poller = api.client(team["owner_key"], session=False)
    cursor = _caught_up_cursor(api, poller, team["id"])
    url = f"/v1/teams/{team['id']}/sync/poll"
    with ThreadPoolExecutor(1) as pool:
        # wait=60: without the early return the answer would be empty.
        waiting = pool.submit(poller.get, url, params={"cursor": cursor, "wait": 60}, timeout=90)
        [entry_id] = _new_entries(owner, team["id"], 1, "awaited")
        response = waiting.result(timeout=DEADLINE)
    assert response.status_code == 200, response.text
    page = response.json()
    assert [c["id"] for c in page["changes"]] == [entry_id]
    assert page["has_more"] is False
    # The cursor it returns is where the pull continues: nothing new after it.
    after = poller.get(f"/v1/teams/{team['id']}/sync", params={"cursor": page["cursor"]}).json()
    assert after["changes"] == []


def test_long_poll_returns_empty_after_the_wait_when_nothing_changes(api: Api) -> None:
    team = api.create_team()
    poller = api.client(team["owner_key"], session=False)
    cursor = _caught_up_cursor(api, poller, team["id"])
    url = f"/v1/teams/{team['id']}/sync/poll"
    page = poller.get(url, params={"cursor": cursor, "wait": 1}).json()
    assert page["changes"] == []
    assert page["has_more"] is False
    assert isinstance(page["cursor"], str)
    # No cursor: a full sync answers at once, like the pull.
    full = poller.get(url, params={"wait": 60}).json()
    assert {c["entity"] for c in full["changes"]} == {"member"}
    too_long = poller.get(url, params={"wait": 61})
    assert too_long.status_code == 422


def test_streams_per_key_are_capped_with_a_429_envelope(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_stream, "MAX_STREAMS_PER_KEY", 2)
    team = api.create_team()
    client = api.client(team["owner_key"], session=False)
    url = f"/v1/teams/{team['id']}/sync/stream"
    with ExitStack() as open_streams:
        for _ in range(2):
            open_streams.enter_context(_stream(client, team["id"]))
        with client.stream("GET", url, timeout=10) as refused:
            assert refused.status_code == 429
            assert refused.headers["Retry-After"] == str(sync_stream.RATE_LIMIT_RETRY_AFTER)
            body = orjson.loads(refused.read())
        assert body["error"]["code"] == "RATE_LIMITED"
        assert body["error"]["details"]["max_streams"] == 2
    # Closed streams give their places back once the server sees them go.
    deadline = time.monotonic() + DEADLINE
    while True:
        with client.stream("GET", url, timeout=10) as again:
            if again.status_code == 200:
                break
            assert again.status_code == 429
        assert time.monotonic() < deadline, "closed streams kept their places"


def test_a_client_that_stops_reading_is_dropped_alone(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_stream, "SEND_TIMEOUT_SECONDS", 0.5)
    team = api.create_team()
    owner = api.client(team["owner_key"])
    for n in range(60):  # a 6 MB full sync: more than socket buffers hold
        entry = {"title": f"big {n}", "body": "x" * 100_000}
        assert owner.post(f"/v1/teams/{team['id']}/entries", json=entry).status_code == 201
    client = api.client(team["owner_key"], session=False)
    key_id = client.get("/v1/me").json()["key_id"]
    with _stream(client, team["id"], cursor=_caught_up_cursor(api, client, team["id"])) as healthy:
        deadline = time.monotonic() + DEADLINE
        url = urlsplit(api.base_url)
        with socket.socket() as slow:
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow.connect((url.hostname, url.port))
            request = (
                f"GET /v1/teams/{team['id']}/sync/stream HTTP/1.1\r\nHost: {url.netloc}\r\n"
                f"Authorization: Bearer {team['owner_key']}\r\n\r\n"
            )
            slow.sendall(request.encode())
            # The healthy stream's heartbeats are the clock; the slow one never reads.
            while streams.count(key_id) < 2:
                healthy.next(deadline)
            while streams.count(key_id) > 1:
                healthy.next(deadline)
            assert healthy.next(deadline) == "heartbeat"  # unaffected
            # The server closed the connection: what it had buffered, then EOF.
            slow.settimeout(DEADLINE)
            while slow.recv(1 << 20):
                assert time.monotonic() < deadline


def test_closing_all_streams_ends_them_cleanly(api: Api) -> None:
    team = api.create_team()
    client = api.client(team["owner_key"], session=False)
    key_id = client.get("/v1/me").json()["key_id"]
    with _stream(client, team["id"]) as stream:
        assert streams.count(key_id) == 1
        # What a SIGTERM does through api.sse.install_shutdown_signals.
        assert sync_stream.close_all_streams() >= 1
        # The body ends without an error; the full sync may come first.
        rest = stream.rest()
        assert all(isinstance(item, Event) or item == "heartbeat" for item in rest)
        assert all(item.event == "changes" for item in rest if isinstance(item, Event))
    assert streams.count(key_id) == 0
    with _stream(client, team["id"]) as stream:  # not a lasting state: new streams run
        assert isinstance(stream.next(time.monotonic() + DEADLINE), Event | str)


def test_a_stream_ends_when_its_key_is_revoked(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync_stream, "REAUTH_SECONDS", 0.0)
    team = api.create_team()
    owner = api.client(team["owner_key"])
    me = owner.get("/v1/me").json()
    base = f"/v1/teams/{team['id']}"
    key = owner.post(f"{base}/api-keys", json={"user_id": me["user_id"], "name": "phone"})
    phone = key.json()["data"]
    phone_client = api.client(phone["key"], session=False)
    with _stream(phone_client, team["id"]) as stream:
        revoked = owner.delete(f"{base}/api-keys/{phone['key_id']}")
        assert revoked.status_code in (200, 204), revoked.text
        # Idle, the stream checks its key at each heartbeat: the server ends it.
        assert all(isinstance(item, Event) or item == "heartbeat" for item in stream.rest())
    assert phone_client.get(f"{base}/sync/stream").status_code == 401
