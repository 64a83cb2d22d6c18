"""HTTP request metrics: a count and a latency histogram by method, route
template and status, and the event streams open now. Pure ASGI, so it sees
every answer, those of middleware that answer before routing too.

Labels are bounded: the route is the template (``/v1/teams/{team_id}/entries``),
never the raw path, and a path no route matches is ``<unmatched>``; unusual
methods are ``OTHER``. Raw paths would make one series per id."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Final

from prometheus_client import Counter, Gauge, Histogram
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "HTTP_REQUESTS",
    "HTTP_REQUEST_SECONDS",
    "SSE_CONNECTIONS",
    "UNMATCHED",
    "HttpMetricsMiddleware",
    "method_label",
    "route_label",
]

UNMATCHED: Final = "<unmatched>"
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_EVENT_STREAM: Final = b"text/event-stream"

HTTP_REQUESTS: Final = Counter(
    "chronik_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_REQUEST_SECONDS: Final = Histogram(
    "chronik_http_request_duration_seconds",
    "Seconds from a request's arrival to the end of its answer, by method, route template"
    " and status (event streams are left out: they last as long as the client stays).",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
SSE_CONNECTIONS: Final = Gauge(
    "chronik_sse_connections",
    "Server-Sent Event streams open now, by route template.",
    ["route"],
)


def method_label(scope: Scope) -> str:
    method = str(scope.get("method", ""))
    return method if method in _METHODS else "OTHER"


def _template(route: Any) -> str | None:
    # path_format: the template with converters dropped ({id:int} -> {id}).
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else None


def _matching_route(scope: Scope) -> BaseRoute | None:
    """The route the router would pick, for requests answered before routing
    (a body too large, a CORS preflight): the same label as when routed."""
    return _match_in(getattr(getattr(scope.get("app"), "router", None), "routes", ()), scope)


def _match_in(routes: Iterable[BaseRoute], scope: Scope) -> BaseRoute | None:
    partial: BaseRoute | None = None
    for candidate in routes:
        route: BaseRoute | None = candidate
        match, _ = candidate.matches(scope)
        # FastAPI wraps an included router in one route (routers here are
        # included without a prefix of their own, so the routes inside match
        # the full path): look inside it for the route itself.
        included = getattr(candidate, "original_router", None)
        if match is not Match.NONE and included is not None:
            route = _match_in(included.routes, scope)
            match = Match.NONE if route is None else route.matches(scope)[0]
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial


def route_label(scope: Scope) -> str:
    """The matched route's template; ``<unmatched>`` when no route matches."""
    route = scope.get("route")
    if route is None:
        route = _matching_route(scope)
    return _template(route) or UNMATCHED


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering
        stream_route: str | None = None

        async def observing_send(message: Message) -> None:
            nonlocal status, stream_route
            if message["type"] == "http.response.start":
                status = int(message["status"])
                content_type = next(
                    (v for k, v in message.get("headers", ()) if k.lower() == b"content-type"),
                    b"",
                )
                if content_type.startswith(_EVENT_STREAM):
                    stream_route = route_label(scope)
                    SSE_CONNECTIONS.labels(stream_route).inc()
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            labels = (method_label(scope), route_label(scope), str(status))
            HTTP_REQUESTS.labels(*labels).inc()
            if stream_route is None:
                HTTP_REQUEST_SECONDS.labels(*labels).observe(time.perf_counter() - started)
            else:
                SSE_CONNECTIONS.labels(stream_route).dec()
