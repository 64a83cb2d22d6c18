"""The FastAPI application. Nothing connects at import time: the lifespan
builds every connection from the settings it is given."""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from api.body_limit import BodyLimitMiddleware
from api.errors import install_error_handlers
from api.freshness import ProjectionPositions
from api.http_metrics import HttpMetricsMiddleware
from api.request_context import RequestIdMiddleware
from api.request_limits import RequestLimits
from api.routes import (
    audit,
    audit_ledger,
    entries,
    events,
    health,
    members,
    metrics,
    notifications,
    prompts,
    sync,
    sync_stream,
    teams,
    usage,
    webhook_deliveries,
    webhooks,
)
from api.security_headers import SecurityHeadersMiddleware, install_cors
from api.sse import install_shutdown_signals
from infra.bootstrap import open_services
from infra.command_metrics import observe_commands
from infra.logging import configure_logging, logging_configured, settings_secrets
from infra.memory import bound_malloc, settle_heap
from infra.projection_wiring import connector
from infra.settings import Settings, load_settings
from infra.tracing import setup_tracing, shutdown_tracing

__all__ = ["create_app", "create_server_app"]

_UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

# FastAPI tries the routers in turn, each costing tens of microseconds for a
# request it does not answer (a create cost 99 us of matching as the ninth
# route): the busiest first. No request can match routes of two routers
# (tests/unit/test_route_order.py), so the order changes nothing else.
ROUTERS = (
    entries, sync, sync_stream, events, members, teams, prompts, webhooks, notifications,
    usage, webhook_deliveries, audit, audit_ledger, health, metrics,
)  # fmt: skip
DOCUMENTED_TAGS = (
    "operations", "teams", "members", "entries", "prompts", "webhooks", "usage", "sync",
    "events", "audit", "notifications",
)  # fmt: skip


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in _UNTRACED_PATHS


def create_server_app() -> FastAPI:
    """What ``chronik api`` serves (each server process builds its own): the app
    from the environment's settings, with the process's heap settled once it
    has started (``infra.memory.settle_heap``)."""
    return create_app(settle_heap_on_start=True)


def create_app(settings: Settings | None = None, *, settle_heap_on_start: bool = False) -> FastAPI:
    """Build the app; with no settings given, read them from the environment."""
    # In every server process: uvicorn starts its workers afresh.
    bound_malloc()
    observe_commands()
    settings = settings or load_settings()
    if multiprocessing.parent_process() is not None and not logging_configured():
        # A uvicorn worker (CHRONIK_HTTP_WORKERS > 1) is spawned afresh: without
        # this it would log unredacted, in structlog's default format.
        configure_logging(settings.log_level, settings.log_format, settings_secrets(settings))
    # FastAPI's own telemetry makes the server span per request (route template
    # as name, a client's traceparent continued) once a provider is installed.
    setup_tracing(settings, role="api")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await run_in_threadpool(
            functools.partial(open_services, settings, follow_changes=True)
        )
        app.state.services = services
        app.state.positions = ProjectionPositions(
            connector(services.target, name="chronik-api"), services.pool.connection
        )
        app.state.positions.start()
        # Event streams never end by themselves; Ctrl-C/SIGTERM must end them
        # or the server would wait for them forever.
        install_shutdown_signals()
        try:
            await services.connect_messaging(name="chronik-api")
            if settle_heap_on_start:
                settle_heap()
            yield
        finally:
            app.state.positions.stop()
            await services.aclose()
            await run_in_threadpool(shutdown_tracing)

    app = FastAPI(
        title="Chronik",
        version="1",
        summary="Event-sourced team journals: commands, reads, delta sync, webhooks, audit.",
        lifespan=lifespan,
        # Tracing on: probes and scrapes every few seconds would bury the commands.
        telemetry={"exclude": _untraced},
        # The reference lists resources in this order, whatever order they are matched in.
        openapi_tags=[{"name": tag} for tag in DOCUMENTED_TAGS],
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    # Outside the body limit, inside the request id: CORS and security headers
    # reach every answer, a 413 or a preflight included.
    install_cors(app, settings)
    app.add_middleware(SecurityHeadersMiddleware, hsts_max_age=settings.hsts_max_age)
    # Rate-limit buckets: this process's own (docs/operations.md).
    app.state.limits = RequestLimits(settings)
    app.add_middleware(RequestIdMiddleware)
    # Outermost: counts every answer, those of the middleware above too.
    app.add_middleware(HttpMetricsMiddleware)
    for module in ROUTERS:
        app.include_router(module.router)
    return app
