"""A database that goes away: 503 with Retry-After in the envelope, never a 500."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

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


def test_commands_answer_503_while_the_database_is_down(
    own_postgres: EmbeddedPostgres, settings: Settings
) -> None:
    target = PostgresTarget.from_url(own_postgres.url)
    migrate(target.conninfo())
    store = open_event_store(target, pool_size=2)
    team = create_team(store, CreateTeam(name="Acme", owner_email="o@example.com"))
    store.close()
    team_id = team.result.data["id"]
    app = create_app(settings.model_copy(update={"database_url": SecretStr(own_postgres.url)}))
    with TestClient(app, raise_server_exceptions=False) as client:
        headers = {"Authorization": f"Bearer {team.owner_key}"}
        url = f"/v1/teams/{team_id}/entries"
        assert client.post(url, json={"title": "before"}, headers=headers).status_code == 201
        own_postgres.stop()
        during = client.post(url, json={"title": "during"}, headers=headers)
        assert during.status_code == 503, during.text
        assert during.headers["retry-after"] == "1"
        assert during.json()["error"]["code"] == "UNAVAILABLE"
        assert "Traceback" not in during.text

        # Back on the same port: the pooled connections it broke are discarded
        # as they fail, and commands succeed again without a restart of the API.
        own_postgres.start(port=own_postgres.port)
        retry = {**headers, "Idempotency-Key": "after-the-outage"}
        wait_until(
            lambda: client.post(url, json={"title": "after"}, headers=retry).status_code == 201,
            timeout=5,
            what="a command succeeding after the database came back",
        )
    # The command refused during the outage left nothing behind.
    with psycopg.connect(own_postgres.url) as conn:
        topics = [r[0] for r in conn.execute("SELECT topic FROM chronik_events").fetchall()]
    assert sum(t.endswith("JournalEntry.Created") for t in topics) == 2
