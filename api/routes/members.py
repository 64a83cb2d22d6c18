"""Members of a team and their API keys: commands, and reads from the teams read model.

A member, a key and the team share one ETag, the team's version: they change
only through the team, and their commands check If-Match against it.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query

from aggregates.base import Actor
from api.dependencies import CommandCtx, ServicesDep, TeamActor
from api.documented import COMMAND, CREATED, PAGE, RESOURCE
from api.errors import ERROR_RESPONSES, ApiError
from api.freshness import TeamsFresh
from api.pagination import PageQuery, page_response
from api.responses import OrjsonResponse
from api.results import command_response, resource_response
from commands import teams
from commands.models import AddMember, ChangeRole, IssueApiKey
from projections import teams as team_reads

router = APIRouter(prefix="/v1/teams/{team_id}", tags=["members"], responses=ERROR_RESPONSES)
KeyId = Annotated[str, Path(pattern=r"^[a-z0-9]{16}$")]


def _key_holder(actor: Actor) -> UUID | None:
    """Managers see every key of the team; anyone else only their own."""
    return None if actor.is_manager else actor.user_id


@router.get("/members", summary="Members, in the order they joined", responses=PAGE)
def list_members(
    query: Annotated[PageQuery, Query()], actor: TeamActor, services: ServicesDep, _: TeamsFresh
) -> OrjsonResponse:
    with services.pool.connection() as conn:
        page = team_reads.list_members(conn, actor.team_id, limit=query.limit, cursor=query.cursor)
    return page_response([team_reads.member_view(r) for r in page.rows], page.next_cursor)


@router.get("/members/{user_id}", summary="One member", responses=RESOURCE)
def get_member(
    user_id: UUID, actor: TeamActor, services: ServicesDep, _: TeamsFresh
) -> OrjsonResponse:
    with services.pool.connection() as conn:
        row = team_reads.get_member(conn, actor.team_id, user_id)
    if row is None:
        raise ApiError(404, "NOT_FOUND", "member not found")
    return resource_response(team_reads.member_view(row), row["version"])


@router.post("/members", status_code=201, summary="Add a member", responses=CREATED)
def add_member(body: AddMember, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(teams.add_member(services.event_store, ctx, body))


@router.patch("/members/{user_id}", summary="Change a member's role", responses=COMMAND)
def change_role(
    user_id: UUID, body: ChangeRole, ctx: CommandCtx, services: ServicesDep
) -> OrjsonResponse:
    return command_response(teams.change_role(services.event_store, ctx, user_id, body))


@router.delete(
    "/members/{user_id}", summary="Remove a member (revokes their keys)", responses=COMMAND
)
def remove_member(user_id: UUID, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(teams.remove_member(services.event_store, ctx, user_id))


@router.get(
    "/api-keys", summary="API keys, oldest first: all for managers, else one's own", responses=PAGE
)
def list_api_keys(
    query: Annotated[PageQuery, Query()], actor: TeamActor, services: ServicesDep, _: TeamsFresh
) -> OrjsonResponse:
    with services.pool.connection() as conn:
        page = team_reads.list_api_keys(
            conn, actor.team_id, holder=_key_holder(actor), limit=query.limit, cursor=query.cursor
        )
    return page_response([team_reads.api_key_view(r) for r in page.rows], page.next_cursor)


@router.get("/api-keys/{key_id}", summary="One API key (never its secret)", responses=RESOURCE)
def get_api_key(
    key_id: KeyId, actor: TeamActor, services: ServicesDep, _: TeamsFresh
) -> OrjsonResponse:
    with services.pool.connection() as conn:
        row = team_reads.get_api_key(conn, actor.team_id, key_id, holder=_key_holder(actor))
    # Another member's key is as unknown to a non-manager as a key that does not exist.
    if row is None:
        raise ApiError(404, "NOT_FOUND", "API key not found")
    return resource_response(team_reads.api_key_view(row), row["version"])


@router.post(
    "/api-keys", status_code=201, summary="Issue an API key (shown once)", responses=CREATED
)
def issue_api_key(body: IssueApiKey, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(teams.issue_api_key(services.event_store, ctx, body))


@router.delete("/api-keys/{key_id}", summary="Revoke an API key", responses=COMMAND)
def revoke_api_key(key_id: KeyId, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(teams.revoke_api_key(services.event_store, ctx, key_id))
