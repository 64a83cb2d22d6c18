"""HTTP metrics label by route template, never by raw path (no server, no database)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.responses import PlainTextResponse, StreamingResponse
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from api.app import create_app
from api.http_metrics import UNMATCHED, HttpMetricsMiddleware, route_label
from infra.settings import Settings

ENTRY = "/v1/teams/{team_id}/entries/{entry_id}"
STREAM = "/v1/teams/{team_id}/stream"


class RefuseBigBodies:
    """Answers before routing, as the body limit and rate limits do."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"x-too-big"):
            await send({"type": "http.response.start", "status": 413, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


def _app() -> FastAPI:
    router = APIRouter(prefix="/v1/teams/{team_id}")

    @router.get("/entries/{entry_id}")
    def get_entry(team_id: uuid.UUID, entry_id: uuid.UUID) -> PlainTextResponse:
        return PlainTextResponse("ok")

    @router.post("/entries/{entry_id}/explode")
    def explode(team_id: uuid.UUID, entry_id: uuid.UUID) -> PlainTextResponse:
        raise RuntimeError("boom")

    @router.get("/stream")
    def stream(team_id: uuid.UUID) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            # Read while the stream is open: the gauge counts it now.
            open_now = _sample("chronik_sse_connections", route=STREAM)
            yield f"data: {open_now}\n\n".encode()

        return StreamingResponse(chunks(), media_type="text/event-stream")

    app = FastAPI()
    app.include_router(router)
    app.add_middleware(RefuseBigBodies)
    app.add_middleware(HttpMetricsMiddleware)
    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(_app(), raise_server_exceptions=False) as client:
        yield client


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _requests(method: str, route: str, status: str) -> float:
    return _sample("chronik_http_requests_total", method=method, route=route, status=status)


def _observed(method: str, route: str, status: str) -> float:
    return _sample(
        "chronik_http_request_duration_seconds_count", method=method, route=route, status=status
    )


def _entry_path() -> str:
    return f"/v1/teams/{uuid.uuid4()}/entries/{uuid.uuid4()}"


def test_a_request_is_labelled_by_its_route_template(client: TestClient) -> None:
    before = (_requests("GET", ENTRY, "200"), _observed("GET", ENTRY, "200"))
    path = _entry_path()
    assert client.get(path).status_code == 200
    assert client.get(_entry_path()).status_code == 200
    assert (_requests("GET", ENTRY, "200"), _observed("GET", ENTRY, "200")) == (
        before[0] + 2,
        before[1] + 2,
    )
    # No series carries the raw path.
    routes = {
        sample.labels.get("route")
        for family in REGISTRY.collect()
        if family.name.startswith("chronik_http_")
        for sample in family.samples
    }
    assert path not in routes


def test_a_path_no_route_matches_is_unmatched(client: TestClient) -> None:
    before = _requests("GET", UNMATCHED, "404")
    assert client.get(f"/nothing/{uuid.uuid4()}").status_code == 404
    assert _requests("GET", UNMATCHED, "404") == before + 1


def test_a_method_the_route_lacks_keeps_the_template(client: TestClient) -> None:
    before = _requests("DELETE", ENTRY, "405")
    assert client.delete(_entry_path()).status_code == 405
    assert _requests("DELETE", ENTRY, "405") == before + 1


def test_an_answer_given_before_routing_gets_the_template_too(client: TestClient) -> None:
    before = _requests("GET", ENTRY, "413")
    assert client.get(_entry_path(), headers={"x-too-big": "1"}).status_code == 413
    assert _requests("GET", ENTRY, "413") == before + 1


def test_an_unhandled_error_counts_as_500(client: TestClient) -> None:
    route = ENTRY + "/explode"
    before = _requests("POST", route, "500")
    assert client.post(_entry_path() + "/explode").status_code == 500
    assert _requests("POST", route, "500") == before + 1


def test_unusual_methods_share_one_label(client: TestClient) -> None:
    before = _requests("OTHER", ENTRY, "405")
    assert client.request("BREW", _entry_path()).status_code == 405
    assert _requests("OTHER", ENTRY, "405") == before + 1
    assert _requests("BREW", ENTRY, "405") == 0


def test_an_event_stream_is_a_connection_while_open_and_no_latency(client: TestClient) -> None:
    observed = _observed("GET", STREAM, "200")
    response = client.get(f"/v1/teams/{uuid.uuid4()}/stream")
    assert response.text == "data: 1.0\n\n"
    assert _sample("chronik_sse_connections", route=STREAM) == 0
    assert _requests("GET", STREAM, "200") >= 1
    assert _observed("GET", STREAM, "200") == observed


def _api_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    for route in routes:
        included = getattr(route, "original_router", None)
        yield from _api_routes(included.routes) if included is not None else (route,)


def test_every_chronik_route_is_found_before_routing_too() -> None:
    """The fallback that labels answers given before routing (413, CORS
    preflights) finds the same template as the router, for every route."""
    app = create_app(Settings())
    checked = 0
    for route in _api_routes(app.router.routes):
        template = str(getattr(route, "path_format", None) or getattr(route, "path", ""))
        path = re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), template)
        for method in getattr(route, "methods", None) or {"GET"}:
            scope = {"type": "http", "method": method, "path": path, "root_path": "",
                     "headers": [], "query_string": b"", "app": app}  # fmt: skip
            assert route_label(scope) == template
            checked += 1
    assert checked > 40
