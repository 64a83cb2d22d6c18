"""Prompts: what the team is asked to write about, optionally on a schedule."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter

from aggregates.prompt import Prompt
from api.dependencies import CommandCtx, ServicesDep, TeamActor
from api.responses import OrjsonResponse
from api.results import command_response, read_in_team, resource_response
from commands import prompts
from commands.models import CreatePrompt, EditPrompt

router = APIRouter(prefix="/v1/teams/{team_id}/prompts", tags=["prompts"])


@router.post("", status_code=201, summary="Create a prompt")
def create_prompt(body: CreatePrompt, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(prompts.create_prompt(services.event_store, ctx, body))


@router.get("/{prompt_id}", summary="One prompt")
def get_prompt(prompt_id: UUID, actor: TeamActor, services: ServicesDep) -> OrjsonResponse:
    prompt = read_in_team(services, prompt_id, Prompt, actor, "prompt")
    return resource_response(prompts.prompt_view(prompt), prompt.version)


@router.patch("/{prompt_id}", summary="Edit a prompt's text or schedule")
def edit_prompt(
    prompt_id: UUID, body: EditPrompt, ctx: CommandCtx, services: ServicesDep
) -> OrjsonResponse:
    return command_response(prompts.edit_prompt(services.event_store, ctx, prompt_id, body))


@router.post("/{prompt_id}/archive", summary="Archive a prompt")
def archive_prompt(prompt_id: UUID, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(prompts.archive_prompt(services.event_store, ctx, prompt_id))
