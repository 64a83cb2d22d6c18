"""The event feed: a team's public events in position order, for integrations
and auditors. Every role of the team may read it; private entries' events
reach their author only, and webhook and API-key events owners, admins and
auditors only.

JSON pages by default; ``Accept: application/x-ndjson`` streams every event
after ``after`` instead (an export), one document a line.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Depends, Header, Query
from pydantic import BaseModel, Field
from starlette.responses import StreamingResponse

from aggregates.base import Actor, Role
from api.dependencies import ServicesDep, TeamActor
from api.errors import ERROR_RESPONSES, ApiError
from api.freshness import fresh
from api.responses import OrjsonResponse
from projections.event_feed import export_pages, list_events
from projections.public_events import PUBLIC_TYPES

__all__ = ["router"]

router = APIRouter(prefix="/v1/teams/{team_id}/events", tags=["events"], responses=ERROR_RESPONSES)

EventsFresh = Annotated[None, Depends(fresh("event_feed"))]
NDJSON: Final = "application/x-ndjson"
# application/ndjson is the newer spelling of the same format.
_NDJSON_TYPES: Final = frozenset({NDJSON, "application/ndjson"})
MAX_LIMIT: Final = 1000
_KNOWN_TYPES: Final = frozenset(PUBLIC_TYPES)


class EventQuery(BaseModel):
    after: int = Field(default=0, ge=0, le=2**62, description="Events after this position.")
    limit: int = Field(
        default=100, ge=1, le=MAX_LIMIT, description="Page size (ignored by NDJSON exports)."
    )
    types: str | None = Field(
        default=None,
        max_length=2000,
        description=f"Comma-separated public event types, e.g. entry.created,entry.edited. "
        f"Known: {', '.join(PUBLIC_TYPES)}.",
    )


def parse_types(raw: str | None) -> list[str] | None:
    """The distinct types asked for, in order; None for all. Unknown ones are a
    422 that names them, so a typo never silently filters everything out."""
    wanted = list(dict.fromkeys(t.strip() for t in (raw or "").split(",") if t.strip()))
    unknown = [t for t in wanted if t not in _KNOWN_TYPES]
    if unknown:
        raise ApiError(
            422,
            "VALIDATION_ERROR",
            f"unknown event types: {', '.join(unknown)}",
            details={
                "fields": [
                    {"field": "query.types", "message": "unknown event types", "type": "enum"}
                ],
                "unknown": unknown,
                "allowed": list(PUBLIC_TYPES),
            },
        )
    return wanted or None


# Webhook URLs may carry credentials (e.g. chat hooks) and key names are the
# managers' business: plain members do not get these events; auditors do.
_MANAGED_TYPES: Final = frozenset(
    t for t in PUBLIC_TYPES if t.startswith("webhook.") or t.startswith("team.api_key_")
)


def types_for(actor: Actor, wanted: list[str] | None) -> list[str] | None:
    if actor.role is not Role.MEMBER:
        return wanted
    return [t for t in (wanted or PUBLIC_TYPES) if t not in _MANAGED_TYPES]


def wants_ndjson(accept: str | None) -> bool:
    media = ((part.split(";", 1)[0].strip().lower()) for part in (accept or "").split(","))
    return any(m in _NDJSON_TYPES for m in media)


def _lines(pages: Iterable[list[dict[str, Any]]]) -> Iterator[bytes]:
    # One chunk per page: few writes to the socket, memory of one page.
    for page in pages:
        if page:
            yield b"".join(orjson.dumps(doc) + b"\n" for doc in page)


@router.get(
    "",
    summary="The team's public events in position order (NDJSON export with Accept)",
    response_model=None,
    responses={200: {"content": {NDJSON: {"schema": {"type": "string"}}}}},
)
def list_team_events(
    query: Annotated[EventQuery, Query()],
    actor: TeamActor,
    services: ServicesDep,
    _: EventsFresh,
    accept: Annotated[str | None, Header()] = None,
) -> OrjsonResponse | StreamingResponse:
    types = types_for(actor, parse_types(query.types))
    if types == []:  # only types this role may not read were asked for
        return OrjsonResponse({"data": [], "next_after": None, "has_more": False})
    if wants_ndjson(accept):
        pages = export_pages(
            services.pool.connection, actor.team_id, actor.user_id, after=query.after, types=types
        )
        # The first page is read before answering: a database outage is then a
        # 503 envelope rather than a 200 stream cut short.
        first = next(pages)
        return StreamingResponse(_lines(itertools.chain([first], pages)), media_type=NDJSON)
    with services.pool.connection() as conn:
        page = list_events(
            conn,
            actor.team_id,
            actor.user_id,
            after=query.after,
            limit=query.limit,
            types=types,
        )
    return OrjsonResponse(
        {"data": page.events, "next_after": page.next_after, "has_more": page.has_more}
    )
