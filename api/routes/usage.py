"""A team's monthly entry usage against its plan's limit, from the quotas read model."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.dependencies import ServicesDep, TeamActor
from api.documented import PAGE, RESOURCE
from api.errors import ERROR_RESPONSES, ApiError
from api.freshness import QuotasFresh
from api.pagination import PageQuery, page_response
from api.responses import OrjsonResponse
from api.results import resource_response
from projections import quotas

router = APIRouter(prefix="/v1/teams/{team_id}/usage", tags=["usage"], responses=ERROR_RESPONSES)
Month = Annotated[str, Path(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", examples=["2025-05"])]


@router.get("", summary="Months with usage, newest first", responses=PAGE)
def list_usage(
    query: Annotated[PageQuery, Query()], actor: TeamActor, services: ServicesDep, _: QuotasFresh
) -> OrjsonResponse:
    with services.pool.connection() as conn:
        page = quotas.list_usage(conn, actor.team_id, limit=query.limit, cursor=query.cursor)
    return page_response([quotas.usage_view(r) for r in page.rows], page.next_cursor)


@router.get(
    "/{month}",
    summary="One month's usage (YYYY-MM, UTC); zero if nothing was written",
    responses=RESOURCE,
)
def get_usage(
    month: Month, actor: TeamActor, services: ServicesDep, _: QuotasFresh
) -> OrjsonResponse:
    with services.pool.connection() as conn:
        row = quotas.get_usage(conn, actor.team_id, month)
    if row is None:
        raise ApiError(404, "NOT_FOUND", "team not found")
    return resource_response(quotas.usage_view(row), row["position"])
