"""Prompts as they stand: one row per prompt, archived ones kept.

Lists are newest first by the position of the prompt's creation, a unique,
ever-growing key, so keyset pages stay stable while prompts are written.

The scheduler finds its work here too: ``last_issued_at`` (the latest due time
issued) and ``scheduled_since`` (when the current schedule was set), from which
due times are counted. A stale row only costs the scheduler refused attempts:
the prompt aggregate decides what is issued (see infra/scheduler.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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

__all__ = [
    "PromptsProjection",
    "ScheduledPrompt",
    "get_prompt",
    "list_prompts",
    "prompt_view",
    "scheduled_prompts",
]

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
    position bigint NOT NULL,
    last_issued_at timestamptz,
    scheduled_since timestamptz
);
CREATE INDEX prompts_team_idx ON prompts (team_id, created_position DESC);
CREATE INDEX prompts_scheduled_idx ON prompts (id) WHERE schedule IS NOT NULL AND NOT archived;
"""

PROMPTS: Final = Table(
    "prompts",
    key=(("id", "uuid"),),
    columns=(
        "id", "team_id", "text", "schedule", "archived", "version", "created_at", "updated_at",
        "created_position", "position", "last_issued_at", "scheduled_since",
    ),
    jsonb=frozenset({"schedule"}),
)  # fmt: skip

_EVENTS: Final = ("Created", "Edited", "Archived", "Issued")


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
            "last_issued_at": None,
            "scheduled_since": None if data["schedule"] is None else data["timestamp"],
        }

    def changed(self, row: Row, fact: Fact) -> Row | None:
        data = fact.data
        match fact.name:
            case "Edited":
                schedule = _schedule(data["schedule"])
                change = {"text": data["text"], "schedule": schedule}
                if schedule != row["schedule"]:
                    # Due times of a new schedule count from when it was set.
                    change["scheduled_since"] = None if schedule is None else data["timestamp"]
                return change
            case "Archived":
                return {"archived": True}
            case "Issued":
                return {"last_issued_at": data["due_at"]}
        return {}


class PromptsProjection(FoldingProjection):
    name = "prompts"
    # 2: Issued events (version, last_issued_at) and scheduled_since.
    version = 2
    tables = ("prompts",)
    ddl = DDL
    folds = (PromptFold(),)
    handled: ClassVar[frozenset[str]] = frozenset(topic_of(Prompt, e) for e in _EVENTS)


# -- reads ---------------------------------------------------------------------------

SELECT_PROMPT: Final = """
SELECT id, text, schedule, archived, last_issued_at, version, created_at, updated_at
FROM reads.prompts WHERE id = %(id)s AND team_id = %(team_id)s
"""
LIST_PROMPTS: Final = sql.SQL(
    "SELECT id, text, schedule, archived, last_issued_at, version, created_at, updated_at, "
    "created_position "
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
        "last_issued_at": None if row["last_issued_at"] is None else iso(row["last_issued_at"]),
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


SELECT_SCHEDULED: Final = """
SELECT id, team_id, schedule, created_at, last_issued_at, scheduled_since
FROM reads.prompts WHERE schedule IS NOT NULL AND NOT archived
ORDER BY id
"""


@dataclass(frozen=True, slots=True)
class ScheduledPrompt:
    id: UUID
    team_id: UUID
    schedule: Schedule
    # The latest due time issued, if any.
    last_issued_at: datetime | None
    # When the current schedule was set (its due times count from there).
    scheduled_since: datetime


def scheduled_prompts(conn: Conn) -> list[ScheduledPrompt]:
    """Every team's prompts that have a schedule and are not archived."""
    return [
        ScheduledPrompt(
            id=row["id"],
            team_id=row["team_id"],
            schedule=Schedule.model_validate(row["schedule"]),
            last_issued_at=row["last_issued_at"],
            scheduled_since=row["scheduled_since"] or row["created_at"],
        )
        for row in fetch_all(conn, SELECT_SCHEDULED, {})
    ]
