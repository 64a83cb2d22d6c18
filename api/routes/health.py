"""Liveness and readiness for operators and orchestrators."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from api.dependencies import ServicesDep
from api.responses import OrjsonResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Dependencies are reachable", response_model=None)
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
    return OrjsonResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": "5"},
    )
