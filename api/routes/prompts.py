"""Prompts: what the team is asked to write about, optionally on a schedule.
Reads come from the prompts read model."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from api.dependencies import CommandCtx, ServicesDep, TeamActor
from api.documented import COMMAND, CREATED, PAGE, RESOURCE
from api.errors import ERROR_RESPONSES, ApiError
from api.freshness import PromptsFresh
from api.pagination import PageQuery, page_response
from api.responses import OrjsonResponse
from api.results import command_response, resource_response
from commands import prompts
from commands.models import CreatePrompt, EditPrompt
from projections import prompts as prompt_reads

router = APIRouter(
    prefix="/v1/teams/{team_id}/prompts", tags=["prompts"], responses=ERROR_RESPONSES
)


@router.post("", status_code=201, summary="Create a prompt", responses=CREATED)
def create_prompt(body: CreatePrompt, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(prompts.create_prompt(services.event_store, ctx, body))


class PromptQuery(PageQuery):
    include_archived: bool = False


@router.get("", summary="The team's prompts, newest first", responses=PAGE)
def list_prompts(
    query: Annotated[PromptQuery, Query()],
    actor: TeamActor,
    services: ServicesDep,
    _: PromptsFresh,
) -> OrjsonResponse:
    with services.pool.connection() as conn:
        page = prompt_reads.list_prompts(
            conn,
            actor.team_id,
            include_archived=query.include_archived,
            limit=query.limit,
            cursor=query.cursor,
        )
    return page_response([prompt_reads.prompt_view(r) for r in page.rows], page.next_cursor)


@router.get("/{prompt_id}", summary="One prompt, archived or not", responses=RESOURCE)
def get_prompt(
    prompt_id: UUID, actor: TeamActor, services: ServicesDep, _: PromptsFresh
) -> OrjsonResponse:
    with services.pool.connection() as conn:
        row = prompt_reads.get_prompt(conn, actor.team_id, prompt_id)
    if row is None:
        raise ApiError(404, "NOT_FOUND", "prompt not found")
    return resource_response(prompt_reads.prompt_view(row), row["version"])


@router.patch("/{prompt_id}", summary="Edit a prompt's text or schedule", responses=COMMAND)
def edit_prompt(
    prompt_id: UUID, body: EditPrompt, ctx: CommandCtx, services: ServicesDep
) -> OrjsonResponse:
    return command_response(prompts.edit_prompt(services.event_store, ctx, prompt_id, body))


@router.post("/{prompt_id}/archive", summary="Archive a prompt", responses=COMMAND)
def archive_prompt(prompt_id: UUID, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(prompts.archive_prompt(services.event_store, ctx, prompt_id))
