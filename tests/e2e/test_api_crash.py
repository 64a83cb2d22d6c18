"""The API process (a real `chronik api`) killed with SIGKILL while a command
is in flight: a retry with the same Idempotency-Key completes exactly once.

The kill lands at a known point: the test holds the event table's lock (the
lock every append takes), so the command is provably inside its append,
waiting, when the process dies. Three moments:

- before the commit: the orphaned append gives up (its lock timeout) and rolls
  back; the retry appends the command, and a second retry replays it;
- after the commit, before the answer left the process (it is frozen with
  SIGSTOP while the append commits, then killed): the retry replays the answer
  the dead process never sent;
- the orphaned append still waiting when the retry, sent to a second API
  process, arrives: the one that commits first wins and the other replays it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest

from infra.db import PostgresTarget
from infra.devstack.processes import free_port, wait_until
from infra.event_store import open_event_store
from infra.settings import Settings
from tests.projection_support import TeamFixture, connect, create_team


@dataclass
class ApiProcess:
    """One `chronik api` process (one uvicorn worker, so the kill hits the
    process serving the request)."""

    settings: Settings
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "CHRONIK_DATABASE_URL": self.settings.database_url_value(),
            "CHRONIK_NATS_URL": self.settings.nats_url or "",
            "CHRONIK_NATS_NAMESPACE": self.settings.nats_namespace,
            "CHRONIK_HTTP_PORT": str(self.port),
            "CHRONIK_HTTP_WORKERS": "1",
            "CHRONIK_LOG_LEVEL": "WARNING",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "api"], env=env, stdout=subprocess.DEVNULL
        )
        wait_until(self._up, timeout=60, what="the API serving")

    def _up(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, "the API exited"
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@contextmanager
def api_processes(settings: Settings, count: int) -> Iterator[list[ApiProcess]]:
    apis = [ApiProcess(settings) for _ in range(count)]
    try:
        for api in apis:
            api.start()
        yield apis
    finally:
        for api in apis:
            api.stop()


@contextmanager
def appends_blocked(url: str) -> Iterator[None]:
    """Holds the lock every append takes (the library's and group commit's
    LOCK TABLE ... IN EXCLUSIVE MODE): reads go on, appends wait."""
    with psycopg.connect(url) as conn:
        conn.execute("LOCK TABLE chronik_events IN EXCLUSIVE MODE")
        yield
        conn.rollback()


def appends_waiting(url: str) -> int:
    """Sessions of this database waiting for the event table's lock."""
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks"
            " WHERE relation = 'chronik_events'::regclass AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
    assert row is not None
    return int(row[0])


def count_events(url: str, originator: UUID | None = None) -> int:
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM chronik_events"
            " WHERE %(id)s::uuid IS NULL OR originator_id = %(id)s",
            {"id": originator},
        ).fetchone()
    assert row is not None
    return int(row[0])


def stored_answer(url: str, team_id: UUID, key: str) -> dict[str, Any] | None:
    with connect(url) as conn:
        row = conn.execute(
            "SELECT response FROM idempotency_records WHERE team_id = %s AND idempotency_key = %s",
            (team_id, key),
        ).fetchone()
    return None if row is None else dict(row[0])


class InFlight:
    """A command sent from a thread of its own; its outcome once it ends."""

    def __init__(self, base_url: str, path: str, headers: dict[str, str], body: Any) -> None:
        self.outcome: httpx.Response | Exception | None = None
        self._thread = threading.Thread(target=self._send, args=(base_url, path, headers, body))
        self._thread.start()

    def _send(self, base_url: str, path: str, headers: dict[str, str], body: Any) -> None:
        try:
            with httpx.Client(base_url=base_url, timeout=60) as client:
                self.outcome = client.post(path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            self.outcome = exc

    def result(self) -> httpx.Response | Exception | None:
        self._thread.join(timeout=70)
        assert not self._thread.is_alive(), "the request never ended"
        return self.outcome


@dataclass
class Scene:
    url: str
    team: TeamFixture
    events_per_create: int  # measured on an uninterrupted create: the shape to compare with
    completed: httpx.Response

    @property
    def path(self) -> str:
        return f"/v1/teams/{self.team.team_id}/entries"

    def headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.team.owner_key}", "Idempotency-Key": key}


@pytest.fixture
def team(settings: Settings) -> TeamFixture:
    store = open_event_store(PostgresTarget.from_url(settings.database_url_value()), pool_size=2)
    try:
        return create_team(store)
    finally:
        store.close()


def set_the_scene(settings: Settings, team: TeamFixture, api: ApiProcess) -> Scene:
    """An uninterrupted create through ``api``: what a completed command
    answers, and how many events one create appends (the entry and its quota)."""
    url = settings.database_url_value()
    path = f"/v1/teams/{team.team_id}/entries"
    auth = {"Authorization": f"Bearer {team.owner_key}"}
    with httpx.Client(base_url=api.base_url, timeout=30, headers=auth) as client:
        # The month's first create also opens its quota: measure the second.
        client.post(path, json={"title": "first"}).raise_for_status()
        before = count_events(url)
        entry_id = uuid4()
        completed = client.post(
            path, json={"id": str(entry_id), "title": "plain"}, headers={"Idempotency-Key": "plain"}
        )
    assert_completed(completed, entry_id, replayed=False)
    events_per_create = count_events(url) - before
    assert events_per_create >= 1
    return Scene(url, team, events_per_create, completed)


def assert_completed(response: httpx.Response, entry_id: UUID, *, replayed: bool) -> None:
    """What a completed create answers: 201, the entry's id and version, its
    position, ETag and Chronik-Position."""
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"data", "position"}
    assert body["data"] == {"id": str(entry_id), "version": 1}
    assert isinstance(body["position"], int)
    assert body["position"] > 0
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Chronik-Position"] == str(body["position"])
    assert ("Idempotent-Replayed" in response.headers) is replayed


def assert_same_answer(first: httpx.Response, again: httpx.Response) -> None:
    assert again.status_code == first.status_code
    assert again.json() == first.json()
    for header in ("ETag", "Chronik-Position"):
        assert again.headers[header] == first.headers[header]


def assert_exactly_once(scene: Scene, entry_id: UUID, before: int) -> None:
    """One Created event for the entry, and one create's worth of events in all
    (so its quota was counted once too)."""
    assert count_events(scene.url, entry_id) == 1
    assert count_events(scene.url) == before + scene.events_per_create


def test_killed_before_the_commit_a_retry_appends_once(
    settings: Settings, team: TeamFixture
) -> None:
    url = settings.database_url_value()
    with api_processes(settings, 1) as (api,):
        scene = set_the_scene(settings, team, api)
        before = count_events(url)
        entry_id, key = uuid4(), "killed-before-commit"
        body = {"id": str(entry_id), "title": "in flight"}
        with appends_blocked(url):
            request = InFlight(api.base_url, scene.path, scene.headers(key), body)
            wait_until(lambda: appends_waiting(url) == 1, timeout=30, what="the append waiting")
            api.kill()
            assert isinstance(request.result(), httpx.TransportError)
            # The orphaned append is still queued in PostgreSQL: it gives up
            # when its lock timeout (the library's 5 s) expires and rolls back.
            wait_until(lambda: appends_waiting(url) == 0, timeout=30, what="the orphan giving up")
        assert count_events(url) == before
        assert stored_answer(url, team.team_id, key) is None

        api.start()
        with httpx.Client(base_url=api.base_url, timeout=30) as client:
            retry = client.post(scene.path, json=body, headers=scene.headers(key))
            assert_completed(retry, entry_id, replayed=False)
            again = client.post(scene.path, json=body, headers=scene.headers(key))
        assert_completed(again, entry_id, replayed=True)
        assert_same_answer(retry, again)
        assert_exactly_once(scene, entry_id, before)


def test_killed_after_the_commit_before_the_answer_a_retry_replays_it(
    settings: Settings, team: TeamFixture
) -> None:
    url = settings.database_url_value()
    with api_processes(settings, 1) as (api,):
        scene = set_the_scene(settings, team, api)
        before = count_events(url)
        entry_id, key = uuid4(), "killed-after-commit"
        body = {"id": str(entry_id), "title": "committed, never answered"}
        with appends_blocked(url):
            request = InFlight(api.base_url, scene.path, scene.headers(key), body)
            wait_until(lambda: appends_waiting(url) == 1, timeout=30, what="the append waiting")
            # Frozen, the process cannot send an answer; its append statement
            # is already in PostgreSQL and commits there once the lock is free.
            api.signal(signal.SIGSTOP)
        wait_until(
            lambda: stored_answer(url, team.team_id, key) is not None,
            timeout=30,
            what="the frozen process's append committing",
        )
        api.kill()
        assert isinstance(request.result(), httpx.TransportError)  # no answer ever arrived
        assert_exactly_once(scene, entry_id, before)
        unsent = stored_answer(url, team.team_id, key)

        api.start()
        with httpx.Client(base_url=api.base_url, timeout=30) as client:
            retry = client.post(scene.path, json=body, headers=scene.headers(key))
            again = client.post(scene.path, json=body, headers=scene.headers(key))
        assert_completed(retry, entry_id, replayed=True)
        assert retry.json() == {"data": {"id": str(entry_id), "version": 1}, **_position(unsent)}
        assert_same_answer(retry, again)
        assert_exactly_once(scene, entry_id, before)


def _position(stored: dict[str, Any] | None) -> dict[str, Any]:
    assert stored is not None
    return {"position": stored["position"]}


def test_a_retry_racing_the_orphaned_append_is_answered_once(
    settings: Settings, team: TeamFixture
) -> None:
    """The client retries at once against another API process (as behind a load
    balancer) while the dead process's append still waits in PostgreSQL."""
    url = settings.database_url_value()
    with api_processes(settings, 2) as (doomed, other):
        scene = set_the_scene(settings, team, doomed)
        # The other process has checked the key already: the retry goes straight on.
        httpx.get(f"{other.base_url}/v1/me", headers=scene.headers("-")).raise_for_status()
        before = count_events(url)
        entry_id, key = uuid4(), "racing-the-orphan"
        body = {"id": str(entry_id), "title": "sent twice"}
        with appends_blocked(url):
            first = InFlight(doomed.base_url, scene.path, scene.headers(key), body)
            wait_until(lambda: appends_waiting(url) == 1, timeout=30, what="the append waiting")
            doomed.kill()
            assert isinstance(first.result(), httpx.TransportError)
            retry = InFlight(other.base_url, scene.path, scene.headers(key), body)
            # Both wait, the orphan first in the lock's queue (within its 5 s timeout).
            wait_until(lambda: appends_waiting(url) == 2, timeout=4, what="the retry waiting too")
        answer = retry.result()
        assert isinstance(answer, httpx.Response)
        # The orphan committed first; the retry lost the race on the key and replays it.
        assert_completed(answer, entry_id, replayed=True)
        assert stored_answer(url, team.team_id, key) == {
            "data": {"id": str(entry_id), "version": 1},
            "version": 1,
            **_position(answer.json()),
        }
        assert_exactly_once(scene, entry_id, before)
        with httpx.Client(base_url=other.base_url, timeout=30) as client:
            assert_same_answer(
                answer, client.post(scene.path, json=body, headers=scene.headers(key))
            )
