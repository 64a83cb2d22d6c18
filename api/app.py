"""The FastAPI application. Nothing connects at import time: the lifespan
builds every connection from the settings it is given."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from api.body_limit import BodyLimitMiddleware
from api.errors import install_error_handlers
from api.freshness import ProjectionPositions
from api.request_context import RequestIdMiddleware
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
from api.sse import install_shutdown_signals
from infra.bootstrap import open_services
from infra.memory import bound_malloc
from infra.projection_wiring import connector
from infra.settings import Settings, load_settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; with no settings given, read them from the environment."""
    # In every server process: uvicorn starts its workers afresh.
    bound_malloc()
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await run_in_threadpool(open_services, settings)
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
            yield
        finally:
            app.state.positions.stop()
            await services.aclose()

    app = FastAPI(
        title="Chronik",
        version="1",
        summary="Event-sourced team journals: commands, reads, delta sync, webhooks, audit.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    routers = (
        health, metrics, teams, members, entries, prompts, webhooks, usage, sync, sync_stream,
        events, webhook_deliveries, audit, audit_ledger, notifications,
    )  # fmt: skip
    for module in routers:
        app.include_router(module.router)
    return app
