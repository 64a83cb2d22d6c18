"""The app in-process, against real PostgreSQL and NATS."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from infra.settings import Settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "nats": "ok"}


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    assert len(client.get("/healthz").headers["x-request-id"]) >= 8
    echoed = client.get("/healthz", headers={"X-Request-Id": "trace-abc-123"})
    assert echoed.headers["x-request-id"] == "trace-abc-123"
    refused = client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"})
    assert refused.headers["x-request-id"] != "bad id\twith spaces"


def test_unknown_routes_answer_in_the_error_envelope(client: TestClient) -> None:
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    body = response.json()
    assert body["error"]["code"] == "NOT_FOUND"
    assert body["request_id"] == response.headers["x-request-id"]


def test_readiness_reports_a_database_outage(settings: Settings) -> None:
    broken = settings.model_copy(update={"database_url": None})
    unreachable = "postgresql://nobody@127.0.0.1:1/none"
    from pydantic import SecretStr

    with TestClient(
        create_app(broken.model_copy(update={"database_url": SecretStr(unreachable)}))
    ) as c:
        response = c.get("/readyz")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["checks"]["database"] == "unreachable"


def test_the_api_starts_while_nats_is_down_and_reports_it(settings: Settings) -> None:
    down = settings.model_copy(update={"nats_url": "nats://127.0.0.1:1"})
    with TestClient(create_app(down)) as c:
        assert c.get("/healthz").status_code == 200
        response = c.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "nats": "unreachable"}
