"""Journal entries: commands, and reads from the entries read model."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import Field

from api.dependencies import CommandCtx, ServicesDep, TeamActor
from api.documented import COMMAND, CREATED, PAGE, RESOURCE
from api.errors import ERROR_RESPONSES, ApiError
from api.freshness import EntriesFresh
from api.pagination import PageQuery, page_response
from api.responses import OrjsonResponse
from api.results import command_response, resource_response
from api.timestamps import Rfc3339
from commands import entries
from commands.models import CreateEntry, EditEntry
from projections.entries import EntryFilter, entry_view, get_entry, list_entries

router = APIRouter(
    prefix="/v1/teams/{team_id}/entries", tags=["entries"], responses=ERROR_RESPONSES
)


@router.post(
    "",
    status_code=201,
    summary="Write an entry (counts against the monthly quota)",
    responses=CREATED,
)
def create_entry(body: CreateEntry, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(entries.create_entry(services.event_store, ctx, body))


class EntryQuery(PageQuery):
    author: UUID | None = None
    # No NUL: PostgreSQL text cannot hold one (the query would fail with a 500).
    tag: str | None = Field(default=None, max_length=64, pattern=r"^[^\x00]*$")
    prompt_id: UUID | None = None
    visibility: Literal["team", "private"] | None = None
    include_deleted: bool = False
    updated_after: Rfc3339 | None = None


@router.get("", summary="Entries this key may see, newest first", responses=PAGE)
def list_team_entries(
    query: Annotated[EntryQuery, Query()],
    actor: TeamActor,
    services: ServicesDep,
    _: EntriesFresh,
) -> OrjsonResponse:
    where = EntryFilter(
        author=query.author,
        tag=query.tag,
        prompt_id=query.prompt_id,
        visibility=query.visibility,
        include_deleted=query.include_deleted,
        updated_after=query.updated_after,
    )
    with services.pool.connection() as conn:
        page = list_entries(
            conn, actor.team_id, actor.user_id, where, limit=query.limit, cursor=query.cursor
        )
    return page_response([entry_view(row) for row in page.rows], page.next_cursor)


@router.get("/{entry_id}", summary="One entry, if this key may see it", responses=RESOURCE)
def get_one_entry(
    entry_id: UUID, actor: TeamActor, services: ServicesDep, _: EntriesFresh
) -> OrjsonResponse:
    with services.pool.connection() as conn:
        row = get_entry(conn, actor.team_id, actor.user_id, entry_id)
    if row is None:
        raise ApiError(404, "NOT_FOUND", "entry not found")
    return resource_response(entry_view(row), row["version"])


@router.patch("/{entry_id}", summary="Edit an entry or change its visibility", responses=COMMAND)
def edit_entry(
    entry_id: UUID, body: EditEntry, ctx: CommandCtx, services: ServicesDep
) -> OrjsonResponse:
    return command_response(entries.edit_entry(services.event_store, ctx, entry_id, body))


@router.delete("/{entry_id}", summary="Soft-delete an entry", responses=COMMAND)
def delete_entry(entry_id: UUID, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(entries.delete_entry(services.event_store, ctx, entry_id))


@router.post("/{entry_id}/restore", summary="Restore a deleted entry", responses=COMMAND)
def restore_entry(entry_id: UUID, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(entries.restore_entry(services.event_store, ctx, entry_id))
