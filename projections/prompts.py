"""Prompts as they stand: one row per prompt, archived ones kept.

Lists are newest first by the position of the prompt's creation, a unique,
ever-growing key, so keyset pages stay stable while prompts are written.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final
from uuid import UUID

from psycopg import sql

from aggregates.prompt import Prompt, Schedule
from projections.base import Fact, topic_of
from projections.folding import (
    AggregateRowFold,
    FoldingProjection,
    Row,
    Table,
)
from projections.pagination import Page, decode_cursor, page_of
from projections.reading import Conn, fetch_all, fetch_one, iso, where

__all__ = ["PromptsProjection", "get_prompt", "list_prompts", "prompt_view"]

DDL: Final = """
CREATE TABLE prompts (
    id uuid PRIMARY KEY,
    team_id uuid NOT NULL,
    text text NOT NULL,
    schedule jsonb,
    archived boolean NOT NULL,
    version bigint NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    created_position bigint NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX prompts_team_idx ON prompts (team_id, created_position DESC);
"""

PROMPTS: Final = Table(
    "prompts",
    key=(("id", "uuid"),),
    columns=(
        "id", "team_id", "text", "schedule", "archived", "version", "created_at", "updated_at",
        "created_position", "position",
    ),
    jsonb=frozenset({"schedule"}),
)  # fmt: skip

_EVENTS: Final = ("Created", "Edited", "Archived")


def _schedule(value: Schedule | None) -> dict[str, Any] | None:
    return None if value is None else value.model_dump()


class PromptFold(AggregateRowFold):
    table = PROMPTS
    what = "prompt"

    def created(self, fact: Fact) -> Row:
        data = fact.data
        return {
            "id": fact.aggregate_id,
            "team_id": data["team_id"],
            "text": data["text"],
            "schedule": _schedule(data["schedule"]),
            "archived": False,
            "created_position": fact.position,
        }

    def changed(self, row: Row, fact: Fact) -> Row | None:
        data = fact.data
        match fact.name:
            case "Edited":
                return {"text": data["text"], "schedule": _schedule(data["schedule"])}
            case "Archived":
                return {"archived": True}
        return {}


class PromptsProjection(FoldingProjection):
    name = "prompts"
    version = 1
    tables = ("prompts",)
    ddl = DDL
    folds = (PromptFold(),)
    handled: ClassVar[frozenset[str]] = frozenset(topic_of(Prompt, e) for e in _EVENTS)


# -- reads ---------------------------------------------------------------------------

SELECT_PROMPT: Final = """
SELECT id, text, schedule, archived, version, created_at, updated_at
FROM reads.prompts WHERE id = %(id)s AND team_id = %(team_id)s
"""
LIST_PROMPTS: Final = sql.SQL(
    "SELECT id, text, schedule, archived, version, created_at, updated_at, created_position "
    "FROM reads.prompts WHERE {} ORDER BY created_position DESC LIMIT %(limit)s"
)
_IN_TEAM: Final = "team_id = %(team_id)s"
_NOT_ARCHIVED: Final = "NOT archived"
# Each optional filter is a fixed condition; only the set of them varies.
_FILTERS: Final = {"before": "created_position < %(before)s"}
_CURSOR_KIND: Final = "prompts"


def prompt_view(row: dict[str, Any]) -> dict[str, Any]:
    """The shape commands.prompts.prompt_view gives, which clients rely on."""
    return {
        "id": str(row["id"]),
        "text": row["text"],
        "schedule": row["schedule"],
        "archived": row["archived"],
        "version": row["version"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def get_prompt(conn: Conn, team_id: UUID, prompt_id: UUID) -> dict[str, Any] | None:
    """The prompt, archived or not, if it is ``team_id``'s."""
    return fetch_one(conn, SELECT_PROMPT, {"id": prompt_id, "team_id": team_id})


def list_prompts(
    conn: Conn, team_id: UUID, *, include_archived: bool, limit: int, cursor: str | None
) -> Page:
    """Newest first; raises InvalidCursor."""
    params: dict[str, Any] = {
        "team_id": team_id,
        "before": decode_cursor(_CURSOR_KIND, cursor, int)[0] if cursor else None,
        "limit": limit + 1,
    }
    always = (_IN_TEAM,) if include_archived else (_IN_TEAM, _NOT_ARCHIVED)
    query = LIST_PROMPTS.format(where(_FILTERS, params, *always))
    return page_of(fetch_all(conn, query, params), limit, _CURSOR_KIND, "created_position")
