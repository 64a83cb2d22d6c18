"""Journal entries: commands, and reading one entry as it stands."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter

from aggregates.journal_entry import JournalEntry
from api.dependencies import CommandCtx, ServicesDep, TeamActor
from api.errors import ApiError
from api.responses import OrjsonResponse
from api.results import command_response, read_in_team, resource_response
from commands import entries
from commands.models import CreateEntry, EditEntry

router = APIRouter(prefix="/v1/teams/{team_id}/entries", tags=["entries"])


@router.post("", status_code=201, summary="Write an entry (counts against the monthly quota)")
def create_entry(body: CreateEntry, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(entries.create_entry(services.event_store, ctx, body))


@router.get("/{entry_id}", summary="One entry, if this key may see it")
def get_entry(entry_id: UUID, actor: TeamActor, services: ServicesDep) -> OrjsonResponse:
    entry = read_in_team(services, entry_id, JournalEntry, actor, "entry")
    if not entry.is_visible_to(actor):
        raise ApiError(404, "NOT_FOUND", "entry not found")
    return resource_response(entries.entry_view(entry), entry.version)


@router.patch("/{entry_id}", summary="Edit an entry or change its visibility")
def edit_entry(
    entry_id: UUID, body: EditEntry, ctx: CommandCtx, services: ServicesDep
) -> OrjsonResponse:
    return command_response(entries.edit_entry(services.event_store, ctx, entry_id, body))


@router.delete("/{entry_id}", summary="Soft-delete an entry")
def delete_entry(entry_id: UUID, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(entries.delete_entry(services.event_store, ctx, entry_id))


@router.post("/{entry_id}/restore", summary="Restore a deleted entry")
def restore_entry(entry_id: UUID, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(entries.restore_entry(services.event_store, ctx, entry_id))
