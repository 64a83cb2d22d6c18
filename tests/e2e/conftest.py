"""A real API server (uvicorn on a free port) and a projection worker against
this test's database."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from api.app import create_app
from infra.db import PostgresTarget
from infra.devstack.processes import free_port, wait_until
from infra.event_store import open_event_store
from infra.projection_wiring import open_projection_worker, projections_for
from infra.settings import Settings
from tests.projection_support import running_fanout

OPERATOR_TOKEN = "operator-token-for-tests"


@dataclass
class Api:
    """Clients share one read-your-writes session, as a client SDK would: every
    read waits for the last position any write of the session returned."""

    base_url: str
    last_position: list[int] = field(default_factory=lambda: [0])

    def client(self, key: str | None = None, *, session: bool = True) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        hooks: dict[str, list[Any]] = {"request": [], "response": []}
        if session:
            hooks = {"request": [self._wait_for_writes], "response": [self._remember_position]}
        # Longer than a min_position read may wait (api_settings): a slow
        # projection answers 503 STALE_READ, not a client timeout.
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60, event_hooks=hooks)

    def _wait_for_writes(self, request: httpx.Request) -> None:
        if request.method == "GET" and "Chronik-Min-Position" not in request.headers:
            request.headers["Chronik-Min-Position"] = str(self.last_position[0])

    def _remember_position(self, response: httpx.Response) -> None:
        position = response.headers.get("Chronik-Position")
        if position is not None:
            self.last_position[0] = max(self.last_position[0], int(position))

    def create_team(self, plan: str = "team", name: str = "Acme") -> dict[str, Any]:
        with self.client(OPERATOR_TOKEN) as c:
            response = c.post(
                "/v1/teams", json={"name": name, "plan": plan, "owner_email": "o@example.com"}
            )
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()["data"]
        return data


@pytest.fixture
def api_settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    # A min_position read waits up to 30 s, not the default 5 s, before its
    # 503 STALE_READ: on a busy test machine (the other xdist worker seeding a
    # large log) a projection can trail by seconds.
    marker = request.node.get_closest_marker("read_wait_timeout")
    return settings.model_copy(
        update={
            "operator_token": SecretStr(OPERATOR_TOKEN),
            "http_port": free_port(),
            "projection_poll_interval": 0.5,
            "read_wait_timeout": float(marker.args[0]) if marker else 30.0,
        }
    )


@pytest.fixture
def worker(api_settings: Settings) -> Iterator[None]:
    """All projections, running as `chronik worker` runs them."""
    store = open_event_store(
        PostgresTarget.from_url(api_settings.database_url_value()), pool_size=4
    )
    projection_worker = open_projection_worker(api_settings, store, projections_for(api_settings))
    projection_worker.start()
    yield
    projection_worker.stop()
    store.close()


@pytest.fixture
def api(api_settings: Settings, worker: None) -> Iterator[Api]:
    port = api_settings.http_port
    config = uvicorn.Config(
        create_app(api_settings), host="127.0.0.1", port=port, log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), timeout=30, what="the API's start")
    assert thread.is_alive(), "the API exited during start-up"
    yield Api(f"http://127.0.0.1:{port}")
    server.should_exit = True
    thread.join(15)


@pytest.fixture
def fanout(api_settings: Settings, worker: None) -> Iterator[None]:
    """The relay, the webhook consumer and the delivery worker, as `chronik worker` runs them."""
    store = open_event_store(
        PostgresTarget.from_url(api_settings.database_url_value()), pool_size=2
    )
    with running_fanout(api_settings, store):
        yield
    store.close()
