"""Teams: creation by the operator, reading (from the teams read model) and
changing a team, /v1/me."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from api.dependencies import CommandCtx, CurrentActor, OperatorToken, ServicesDep, TeamActor
from api.documented import COMMAND, CREATED, RESOURCE
from api.errors import ERROR_RESPONSES, ApiError
from api.freshness import TeamsFresh
from api.responses import OrjsonResponse
from api.results import command_response, resource_response
from commands import teams
from commands.models import CreateTeam, UpdateTeam
from projections import teams as team_reads

router = APIRouter(tags=["teams"], responses=ERROR_RESPONSES)


@router.get("/v1/me", summary="Who this key belongs to")
def me(actor: CurrentActor) -> dict[str, str]:
    return {
        "team_id": str(actor.team_id),
        "user_id": str(actor.user_id),
        "key_id": actor.key_id or "",
        "role": actor.role.value,
    }


@router.post(
    "/v1/teams", status_code=201, summary="Create a team (operator token)", responses=CREATED
)
async def create_team(
    request: Request, body: CreateTeam, services: ServicesDep, _: OperatorToken
) -> OrjsonResponse:
    created = await run_in_threadpool(
        teams.create_team,
        services.event_store,
        body,
        request_id=getattr(request.state, "request_id", None),
    )
    return command_response(created.result)


@router.get("/v1/teams/{team_id}", summary="The team and its members", responses=RESOURCE)
def get_team(actor: TeamActor, services: ServicesDep, _: TeamsFresh) -> OrjsonResponse:
    with services.pool.connection() as conn:
        row = team_reads.get_team(conn, actor.team_id)
    if row is None:
        raise ApiError(404, "NOT_FOUND", "team not found")
    return resource_response(team_reads.team_view(row), row["version"])


@router.patch(
    "/v1/teams/{team_id}", summary="Rename the team or change its plan", responses=COMMAND
)
def update_team(body: UpdateTeam, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(teams.update_team(services.event_store, ctx, body))
