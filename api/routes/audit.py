"""Team-scoped audit reads: one aggregate's history and its state at a version
or a time (from the event store, never from read tables), and who did what in
the team (from the event feed's index). Owners, admins and auditors only.

Private entries stay their author's alone here too: a reader gets only the
entry events the event feed would give them, and an entry's state only where
it was not another member's private one; an entry nothing of which is visible
answers 404, as one of another team or none at all.
"""

from __future__ import annotations

from typing import Annotated, Final
from uuid import UUID

import structlog
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from aggregates.base import Actor
from api.dependencies import ServicesDep, TeamActor
from api.documented import PAGE, RESOURCE, STREAM_PAGE
from api.errors import ERROR_RESPONSES, ApiError, validation_error
from api.freshness import fresh
from api.pagination import PageQuery, page_response
from api.responses import OrjsonResponse
from api.routes.events import parse_types
from api.timestamps import Rfc3339
from infra.audit_history import (
    AuditHistory,
    NoSuchVersion,
    NotVisibleAtVersion,
    NotYetCreated,
    Stream,
)
from projections.event_feed import ActivityNotIndexed, list_activity
from projections.public_events import PUBLIC_TYPES
from projections.reading import iso

__all__ = ["router"]

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/teams/{team_id}/audit", tags=["audit"], responses=ERROR_RESPONSES)

# Aggregate versions (of ?version=); global positions are bounded in their cursors.
MAX_VERSION: Final = 2**62
FeedFresh = Annotated[None, Depends(fresh("event_feed"))]


async def audit_reader(actor: TeamActor) -> Actor:
    # After the team check: another team's key gets 404 before any 403.
    if not actor.may_audit:
        raise ApiError(403, "FORBIDDEN", "only owners, admins and auditors may read the audit")
    return actor


AuditReader = Annotated[Actor, Depends(audit_reader)]


class StateQuery(BaseModel):
    version: int | None = Field(
        default=None, ge=1, le=MAX_VERSION, description="The state at this version."
    )
    at: Rfc3339 | None = Field(
        default=None,
        description="The state at this time (RFC 3339 with an offset): the last version "
        "whose event is stamped at or before it.",
    )


class ActivityQuery(PageQuery):
    actor: UUID | None = Field(default=None, description="Only this member's events (user id).")
    from_: Rfc3339 | None = Field(
        default=None, alias="from", description="Events at or after this time (RFC 3339)."
    )
    to: Rfc3339 | None = Field(default=None, description="Events before this time (RFC 3339).")
    types: list[Annotated[str, Field(max_length=2000)]] = Field(
        default_factory=list,
        max_length=50,
        description="Public event types, comma-separated and/or repeated. "
        f"Known: {', '.join(PUBLIC_TYPES)}.",
    )


def _not_found() -> ApiError:
    # One answer for "none", "another team's" and "not yours to see": nothing leaks.
    return ApiError(404, "NOT_FOUND", "aggregate not found")


def _stream(history: AuditHistory, actor: Actor, aggregate_id: UUID) -> Stream:
    found = history.stream(actor.team_id, aggregate_id, actor.user_id)
    if found is None:
        raise _not_found()
    return found


@router.get(
    "/streams/{aggregate_id}/events",
    summary="One aggregate's events, oldest first",
    responses=STREAM_PAGE,
)
def stream_events(
    aggregate_id: UUID,
    query: Annotated[PageQuery, Query()],
    actor: AuditReader,
    services: ServicesDep,
) -> OrjsonResponse:
    history = AuditHistory(services.event_store)
    stream = _stream(history, actor, aggregate_id)
    page = history.events(stream, cursor=query.cursor, limit=query.limit)
    return OrjsonResponse(
        {
            "aggregate": {"id": str(aggregate_id), "type": stream.type},
            "data": page.events,
            "next_cursor": page.next_cursor,
        }
    )


@router.get(
    "/streams/{aggregate_id}/state",
    summary="One aggregate's state at a version or a time",
    responses=RESOURCE,
)
def stream_state(
    aggregate_id: UUID,
    query: Annotated[StateQuery, Query()],
    actor: AuditReader,
    services: ServicesDep,
) -> OrjsonResponse:
    if query.version is not None and query.at is not None:
        raise validation_error("query.at", "give version or at, not both")
    history = AuditHistory(services.event_store)
    stream = _stream(history, actor, aggregate_id)
    try:
        found = history.state(stream, version=query.version, at=query.at)
    except NoSuchVersion as exc:
        raise ApiError(
            404,
            "NOT_FOUND",
            f"the aggregate has no version {query.version}",
            details={"latest_version": exc.latest},
        ) from None
    except NotYetCreated as exc:
        raise ApiError(
            404,
            "NOT_FOUND",
            "the aggregate did not exist yet at that time",
            details={"created_at": iso(exc.created_at)},
        ) from None
    except NotVisibleAtVersion:
        raise ApiError(404, "NOT_FOUND", "the aggregate is not visible at that version") from None
    return OrjsonResponse(
        {
            "data": {
                "aggregate_id": str(aggregate_id),
                "type": stream.type,
                "version": found.version,
                "as_of": iso(found.as_of),
                "state": found.state,
            }
        },
        headers={"ETag": f'"{found.version}"'},
    )


@router.get("/activity", summary="Who did what in the team, in position order", responses=PAGE)
def activity(
    query: Annotated[ActivityQuery, Query()],
    actor: AuditReader,
    services: ServicesDep,
    _: FeedFresh,
) -> OrjsonResponse:
    if query.from_ is not None and query.to is not None and query.to <= query.from_:
        raise validation_error("query.to", "to must be after from")
    types = parse_types(",".join(query.types)) if query.types else None
    try:
        with services.pool.connection() as conn:
            page = list_activity(
                conn,
                actor.team_id,
                actor.user_id,
                cursor=query.cursor,
                limit=query.limit,
                actor=query.actor,
                since=query.from_,
                until=query.to,
                types=types,
            )
    except ActivityNotIndexed as exc:
        log.warning("audit activity index not built yet", error=str(exc))
        raise ApiError(
            503,
            "UNAVAILABLE",
            "the activity index is being built (event feed version 2); retry shortly",
            headers={"Retry-After": "5"},
        ) from None
    return page_response(page.rows, page.next_cursor)
