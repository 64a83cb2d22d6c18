"""A real API server (uvicorn on a free port) against this test's database."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from api.app import create_app
from infra.devstack.processes import free_port
from infra.settings import Settings

OPERATOR_TOKEN = "operator-token-for-tests"


@dataclass
class Api:
    base_url: str

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def create_team(self, plan: str = "team", name: str = "Acme") -> dict[str, Any]:
        with self.client(OPERATOR_TOKEN) as c:
            response = c.post(
                "/v1/teams", json={"name": name, "plan": plan, "owner_email": "o@example.com"}
            )
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()["data"]
        return data


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    port = free_port()
    app_settings = settings.model_copy(
        update={"operator_token": SecretStr(OPERATOR_TOKEN), "http_port": port}
    )
    config = uvicorn.Config(
        create_app(app_settings), host="127.0.0.1", port=port, log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        assert thread.is_alive(), "the API exited during start-up"
        time.sleep(0.02)
    yield Api(f"http://127.0.0.1:{port}")
    server.should_exit = True
    thread.join(15)
