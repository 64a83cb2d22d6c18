"""Liveness and readiness for operators and orchestrators."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from api.dependencies import ServicesDep
from api.responses import OrjsonResponse
from api.routes.metrics import current_fanout_status, projection_statuses
from infra.bootstrap import Services
from infra.fanout_status import FanoutStatus

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _projections(services: Services) -> dict[str, Any]:
    """Reported, not gated on: a stalled projection makes some reads stale, and
    taking every API process out of service would turn that into an outage of
    commands too. Alert on chronik_projection_stalled / _lag instead."""
    _, rows = projection_statuses(services)
    return {
        row.name: {
            "state": row.state,
            "generation": row.generation,
            "position": row.position,
            "lag": row.lag,
            "stalled": None
            if not row.stalled
            else {"position": row.stalled_position, "error": row.stalled_error},
        }
        for row in rows
        if row.state != "building"
    }


def _fanout(status: FanoutStatus) -> dict[str, Any]:
    """Reported, not gated on, like projections: NATS or a receiver being down
    delays webhooks; it must not take the API out of service."""
    return {
        "relay": {
            "position": status.relay_position,
            "lag": status.relay_lag,
            "error": status.relay_error,
            "error_at": None
            if status.relay_error_at is None
            else status.relay_error_at.isoformat(),
        },
        "webhooks": {
            "pending": status.pending,
            "oldest_due_seconds": round(status.oldest_due_seconds, 3),
            "endpoints_failing": status.endpoints_failing,
        },
    }


@router.get(
    "/readyz",
    summary="Dependencies are reachable",
    response_model=None,
    responses={
        503: {
            "description": "Not ready (Retry-After): the same body, `status` unavailable "
            "and the failing check named; not the error envelope.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def readyz(services: ServicesDep) -> OrjsonResponse:
    checks: dict[str, Any] = {}

    def database_ok() -> bool:
        try:
            with services.pool.connection(timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False

    checks["database"] = "ok" if await run_in_threadpool(database_ok) else "unreachable"
    checks["nats"] = (
        "ok" if services.nats is not None and services.nats.is_connected else "unreachable"
    )
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "unavailable", "checks": checks}
    if checks["database"] == "ok":
        body["projections"] = await run_in_threadpool(_projections, services)
        body["fanout"] = _fanout(await run_in_threadpool(current_fanout_status, services))
    return OrjsonResponse(
        body,
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": "5"},
    )
