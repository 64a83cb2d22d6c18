"""Members of a team and their API keys."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path

from api.dependencies import CommandCtx, ServicesDep
from api.responses import OrjsonResponse
from api.results import command_response
from commands import teams
from commands.models import AddMember, ChangeRole, IssueApiKey

router = APIRouter(prefix="/v1/teams/{team_id}", tags=["members"])
KeyId = Annotated[str, Path(pattern=r"^[a-z0-9]{16}$")]


@router.post("/members", status_code=201, summary="Add a member")
def add_member(body: AddMember, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(teams.add_member(services.event_store, ctx, body))


@router.patch("/members/{user_id}", summary="Change a member's role")
def change_role(
    user_id: UUID, body: ChangeRole, ctx: CommandCtx, services: ServicesDep
) -> OrjsonResponse:
    return command_response(teams.change_role(services.event_store, ctx, user_id, body))


@router.delete("/members/{user_id}", summary="Remove a member (revokes their keys)")
def remove_member(user_id: UUID, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(teams.remove_member(services.event_store, ctx, user_id))


@router.post("/api-keys", status_code=201, summary="Issue an API key (shown once)")
def issue_api_key(body: IssueApiKey, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(teams.issue_api_key(services.event_store, ctx, body))


@router.delete("/api-keys/{key_id}", summary="Revoke an API key")
def revoke_api_key(key_id: KeyId, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(teams.revoke_api_key(services.event_store, ctx, key_id))
