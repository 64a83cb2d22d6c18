"""Delta sync for offline clients: push queued offline mutations. Pulls, the
stream and long-polls share the live machinery in ``sync_stream``."""

from __future__ import annotations

from fastapi import APIRouter

from api.dependencies import CommandCtx, ServicesDep
from api.documented import PUSHED
from api.errors import SYNC_ERROR_RESPONSES
from api.responses import OrjsonResponse
from commands.sync_push import PushRequest, push

router = APIRouter(prefix="/v1/teams/{team_id}/sync", tags=["sync"], responses=SYNC_ERROR_RESPONSES)

MAX_SYNC_PAGE = 1000


@router.post(
    "/push",
    summary="Apply queued offline mutations in order, each idempotent by id",
    responses=PUSHED,
)
def push_mutations(body: PushRequest, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    result = push(services.event_store, ctx, body)
    headers = {} if result.position is None else {"Chronik-Position": str(result.position)}
    return OrjsonResponse({"results": result.results, "position": result.position}, headers=headers)
