"""GET /metrics: the families infra.metrics assembles (the worker serves the
same on its own port), for this API process's pools."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.dependencies import ServicesDep
from infra.bootstrap import Services
from infra.event_store import head_position
from infra.fanout_status import FanoutStatus, fanout_status
from infra.metrics import metrics_registry, render
from projections.catalog import all_projections
from projections.status import ProjectionStatus, statuses

router = APIRouter(tags=["operations"])


# For /readyz, which reports the same figures.
def projection_statuses(services: Services) -> tuple[int, list[ProjectionStatus]]:
    with services.pool.connection() as conn:
        head = head_position(conn)
        return head, statuses(conn, all_projections(), head)


def current_fanout_status(services: Services) -> FanoutStatus:
    with services.pool.connection() as conn:
        return fanout_status(conn)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    registry = metrics_registry(services.pool.connection, services.pools)
    # The collectors read the database: off the event loop.
    text = await run_in_threadpool(render, registry)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
