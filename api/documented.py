"""The documented shapes of success bodies, for the OpenAPI document.

Routes build their bodies by hand (orjson, read-model rows), so these models
only describe them: ``responses=`` of each route names its shape, and the
contract tests (tests/e2e/test_fuzz_openapi.py) hold every answer to it. Rows
stay open objects: their fields are listed in docs/ and DESIGN.md.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ACCEPTED",
    "COMMAND",
    "CREATED",
    "EVENT_PAGE",
    "INBOX_PAGE",
    "LIST",
    "PAGE",
    "PUSHED",
    "RESOURCE",
    "STREAM_PAGE",
    "SYNC_PAGE",
]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resource(_Shape):
    """One resource, or a command's or an action's result."""

    data: dict[str, Any]


class Listed(_Shape):
    """Every item at once (short lists)."""

    data: list[dict[str, Any]]


class Page(_Shape):
    """One page of a keyset-paginated list."""

    data: list[dict[str, Any]]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null: last.")


class InboxPage(Page):
    """One page of the inbox, and how many are unread in all."""

    unread_count: int


class CommandAnswer(_Shape):
    """A command applied (ETag and Chronik-Position headers too)."""

    data: dict[str, Any]
    position: int = Field(description="Read-your-writes: pass as min_position to see it.")


class EventPage(_Shape):
    """Public events after a position (NDJSON export: one event a line)."""

    data: list[dict[str, Any]]
    next_after: int | None
    has_more: bool


class SyncPage(_Shape):
    """Changes since the cursor, compacted: one per entity."""

    changes: list[dict[str, Any]]
    cursor: str
    has_more: bool


class Pushed(_Shape):
    """Each mutation's outcome, in order; position: the last one applied."""

    results: list[dict[str, Any]]
    position: int | None


class StreamPage(_Shape):
    """One aggregate's events, oldest first."""

    aggregate: dict[str, Any]
    data: list[dict[str, Any]]
    next_cursor: str | None


def _ok(model: type[BaseModel], status: int = 200) -> dict[int | str, dict[str, Any]]:
    description = (model.__doc__ or "Success.").strip()
    return {status: {"model": model, "description": description}}


RESOURCE: Final = _ok(Resource)
LIST: Final = _ok(Listed)
PAGE: Final = _ok(Page)
INBOX_PAGE: Final = _ok(InboxPage)
COMMAND: Final = _ok(CommandAnswer)
CREATED: Final = _ok(CommandAnswer, 201)
ACCEPTED: Final = _ok(Resource, 202)
EVENT_PAGE: Final = _ok(EventPage)
SYNC_PAGE: Final = _ok(SyncPage)
PUSHED: Final = _ok(Pushed)
STREAM_PAGE: Final = _ok(StreamPage)
