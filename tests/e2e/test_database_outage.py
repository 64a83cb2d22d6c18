"""PostgreSQL stopped and started again while commands stream in: while it is
down every command is answered 503 UNAVAILABLE with Retry-After in the
envelope (never a 500), commands succeed again within 5 s of it coming back
without a restart of the API, every command answered 2xx has its events in the
store, and the ones answered 503 complete exactly once when retried with their
Idempotency-Key (a 503 from a failed append means "outcome unknown")."""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from commands.models import CreateTeam
from commands.teams import create_team
from infra.db import PostgresTarget
from infra.devstack.postgres import EmbeddedPostgres
from infra.devstack.processes import wait_until
from infra.event_store import open_event_store
from infra.migrations import migrate
from infra.settings import Settings

RECOVERY_SECONDS = 5.0
REFUSAL_SECONDS = 20.0
PACE = 0.05  # seconds between a writer's commands: a steady stream, not a flood of 503s
# One writer: while the database is down a command waits ~12 s for its 503
# (the library retries a read 10 times, each waiting 1 s for a pooled
# connection), and concurrent ones wait longer (docs/operations.md, "Fault
# tests").
WRITERS = 1


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, so stopping it harms no other test."""
    data_dir = Path(tempfile.gettempdir()) / f"chronik-outage-{uuid.uuid4().hex[:10]}"
    data_dir.mkdir(mode=0o711)
    (data_dir / "logs").mkdir()
    server = EmbeddedPostgres(data_dir)
    server.start()
    yield server
    server.stop()


@dataclass(frozen=True)
class Answer:
    body: dict[str, str]
    key: str
    sent: float  # monotonic
    done: float  # monotonic, when the answer arrived
    status: int
    retry_after: str | None
    code: str | None
    text: str

    @property
    def entry_id(self) -> UUID:
        return UUID(self.body["id"])


def _answer(body: dict[str, str], key: str, sent: float, response: httpx.Response) -> Answer:
    code = response.json()["error"]["code"] if response.is_error else None
    retry_after = response.headers.get("retry-after")
    done = time.monotonic()
    return Answer(body, key, sent, done, response.status_code, retry_after, code, response.text)


class CommandStream:
    """Creates entries from a few threads, each one command after another,
    each command with a client-chosen id and an Idempotency-Key; keeps every
    answer."""

    def __init__(self, client: TestClient, url: str, headers: dict[str, str]) -> None:
        self.answers: list[Answer] = []
        self._client, self._url, self._headers = client, url, headers
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(w,)) for w in range(WRITERS)]

    def __enter__(self) -> CommandStream:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _run(self, writer: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            body = {"id": str(uuid.uuid4()), "title": f"entry {writer}.{n}"}
            key = f"stream-{writer}-{n}"
            sent = time.monotonic()
            response = self._client.post(
                self._url, json=body, headers={**self._headers, "Idempotency-Key": key}
            )
            self.answers.append(_answer(body, key, sent, response))
            self._stop.wait(PACE)  # pacing the load, not synchronising

    def count(self, status: int, *, sent_after: float = 0.0) -> int:
        return sum(1 for a in list(self.answers) if a.status == status and a.sent > sent_after)


def _created_events(url: str) -> dict[UUID, int]:
    """Entry id -> how many Created events the store holds for it."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT originator_id, count(*) FROM chronik_events"
            " WHERE topic LIKE '%%JournalEntry.Created' GROUP BY originator_id"
        ).fetchall()
    return {row[0]: row[1] for row in rows}


@pytest.mark.timeout(400)
def test_a_command_stream_through_a_database_restart(
    own_postgres: EmbeddedPostgres, settings: Settings
) -> None:
    target = PostgresTarget.from_url(own_postgres.url)
    migrate(target.conninfo())
    store = open_event_store(target, pool_size=2)
    team = create_team(store, CreateTeam(name="Acme", owner_email="o@example.com"))
    store.close()
    team_id = team.result.data["id"]
    app = create_app(settings.model_copy(update={"database_url": SecretStr(own_postgres.url)}))
    headers = {"Authorization": f"Bearer {team.owner_key}"}
    url = f"/v1/teams/{team_id}/entries"
    with TestClient(app, raise_server_exceptions=False) as client:
        with CommandStream(client, url, headers) as stream:
            wait_until(lambda: stream.count(201) >= 20, timeout=60, what="commands before")
            own_postgres.stop()
            down = time.monotonic()
            # The command in flight at the stop, and one sent while it was down.
            wait_until(
                lambda: stream.count(503, sent_after=down) >= 1, timeout=150, what="503s while down"
            )
            read = client.get(url, headers=headers)  # reads too: 503, not 500
            # Back on the same port: the pooled connections it broke are
            # discarded as they fail, and commands succeed again by themselves.
            own_postgres.start(port=own_postgres.port)
            back = time.monotonic()
            wait_until(
                lambda: stream.count(201, sent_after=back) >= 1,
                timeout=90,
                what="a command succeeding after the database came back",
            )
            first_ok = min(a.done for a in stream.answers if a.status == 201 and a.done > back)
            wait_until(
                lambda: stream.count(201, sent_after=back) >= 20, timeout=60, what="commands after"
            )
        answers = list(stream.answers)
        assert {a.status for a in answers} <= {201, 503}, {a.status for a in answers}
        refused = [a for a in answers if a.status == 503]
        assert refused
        # A command sent while the database is down waits for a pooled
        # connection (1 s, tried 10 times by the library), then answers 503.
        assert max(a.done - a.sent for a in refused) <= REFUSAL_SECONDS, refused
        for answer in [*refused, _answer({}, "", 0.0, read)]:
            assert answer.retry_after == "1", answer
            assert answer.code == "UNAVAILABLE", answer
            assert "Traceback" not in answer.text
        assert read.status_code == 503

        # Every command answered 201 has its events in the store, once.
        stored = _created_events(own_postgres.url)
        for answer in answers:
            if answer.status == 201:
                assert stored.get(answer.entry_id) == 1, answer
        # A 503 promised nothing: the retry with its key completes it exactly once.
        for answer in refused:
            retry = client.post(
                url, json=answer.body, headers={**headers, "Idempotency-Key": answer.key}
            )
            assert retry.status_code == 201, retry.text
            assert retry.json()["data"]["id"] == str(answer.entry_id)
    stored = _created_events(own_postgres.url)
    assert {a.entry_id for a in answers} == set(stored)
    assert set(stored.values()) == {1}
    # Pools retry about once a second (infra.db.reconnect_steadily), not with
    # psycopg_pool's doubling back-off, which took 10-30 s here.
    assert first_ok - back <= RECOVERY_SECONDS, f"recovered {first_ok - back:.1f} s after"
