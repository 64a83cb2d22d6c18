"""Teams: creation by the operator, reading and changing a team, /v1/me."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from aggregates.team import Team
from api.dependencies import CommandCtx, CurrentActor, OperatorToken, ServicesDep, TeamActor
from api.responses import OrjsonResponse
from api.results import command_response, read_in_team, resource_response
from commands import teams
from commands.models import CreateTeam, UpdateTeam

router = APIRouter(tags=["teams"])


@router.get("/v1/me", summary="Who this key belongs to")
def me(actor: CurrentActor) -> dict[str, str]:
    return {
        "team_id": str(actor.team_id),
        "user_id": str(actor.user_id),
        "key_id": actor.key_id or "",
        "role": actor.role.value,
    }


@router.post("/v1/teams", status_code=201, summary="Create a team (operator token)")
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


@router.get("/v1/teams/{team_id}", summary="The team and its members")
def get_team(actor: TeamActor, services: ServicesDep) -> OrjsonResponse:
    team = read_in_team(services, actor.team_id, Team, actor, "team")
    return resource_response(teams.team_view(team), team.version)


@router.patch("/v1/teams/{team_id}", summary="Rename the team or change its plan")
def update_team(body: UpdateTeam, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(teams.update_team(services.event_store, ctx, body))
