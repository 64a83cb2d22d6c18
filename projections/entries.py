"""Journal entries as they stand: one row per entry, soft-deleted rows kept.

Lists are newest first by the position of the entry's creation, a unique,
ever-growing key, so keyset pages stay stable while entries are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Final
from uuid import UUID

from psycopg import sql

from aggregates.journal_entry import JournalEntry
from projections.base import Fact, topic_of
from projections.folding import (
    AggregateRowFold,
    FoldingProjection,
    Row,
    Table,
)
from projections.pagination import Page, decode_cursor, page_of
from projections.reading import Conn, fetch_all, fetch_one, iso, iso_or_none, where

__all__ = ["EntriesProjection", "EntryFilter", "Page", "get_entry", "list_entries"]

DDL: Final = """
CREATE TABLE entries (
    id uuid PRIMARY KEY,
    team_id uuid NOT NULL,
    author_id uuid NOT NULL,
    title text NOT NULL,
    body text NOT NULL,
    tags text[] NOT NULL,
    visibility text NOT NULL,
    prompt_id uuid,
    version bigint NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    deleted_at timestamptz,
    created_position bigint NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX entries_team_idx ON entries (team_id, created_position DESC);
CREATE INDEX entries_author_idx ON entries (team_id, author_id, created_position DESC);
CREATE INDEX entries_prompt_idx ON entries (team_id, prompt_id, created_position DESC)
    WHERE prompt_id IS NOT NULL;
"""

ENTRIES: Final = Table(
    "entries",
    key=(("id", "uuid"),),
    columns=(
        "id", "team_id", "author_id", "title", "body", "tags", "visibility", "prompt_id",
        "version", "created_at", "updated_at", "deleted_at", "created_position", "position",
    ),
)  # fmt: skip

_EVENTS: Final = ("Created", "Edited", "VisibilityChanged", "Deleted", "Restored")


class EntryFold(AggregateRowFold):
    table = ENTRIES
    what = "entry"

    def created(self, fact: Fact) -> Row:
        data = fact.data
        return {
            "id": fact.aggregate_id,
            "team_id": data["team_id"],
            "author_id": data["author_id"],
            "title": data["title"],
            "body": data["body"],
            "tags": list(data["tags"]),
            "visibility": str(data["visibility"]),
            "prompt_id": data["prompt_id"],
            "deleted_at": None,
            "created_position": fact.position,
        }

    def changed(self, row: Row, fact: Fact) -> Row | None:
        data = fact.data
        match fact.name:
            case "Edited":
                return {"title": data["title"], "body": data["body"], "tags": list(data["tags"])}
            case "VisibilityChanged":
                return {"visibility": str(data["visibility"])}
            case "Deleted":
                return {"deleted_at": data["deleted_at"]}
            case "Restored":
                return {"deleted_at": None}
        return {}


class EntriesProjection(FoldingProjection):
    name = "entries"
    version = 1
    tables = ("entries",)
    ddl = DDL
    folds = (EntryFold(),)
    handled: ClassVar[frozenset[str]] = frozenset(topic_of(JournalEntry, e) for e in _EVENTS)


# -- reads ---------------------------------------------------------------------------

# Private entries are their author's alone, whatever the reader's role.
_VISIBLE: Final = "team_id = %(team_id)s AND (visibility = 'team' OR author_id = %(reader)s)"
SELECT_ENTRY: Final = """
SELECT id, team_id, author_id, title, body, tags, visibility, prompt_id, version,
       created_at, updated_at, deleted_at
FROM reads.entries
WHERE id = %(id)s AND team_id = %(team_id)s AND (visibility = 'team' OR author_id = %(reader)s)
"""
LIST_ENTRIES: Final = sql.SQL(
    "SELECT id, team_id, author_id, title, body, tags, visibility, prompt_id, version, "
    "created_at, updated_at, deleted_at, created_position "
    "FROM reads.entries WHERE {} ORDER BY created_position DESC LIMIT %(limit)s"
)
# Each optional filter is a fixed condition; only the set of them varies.
_FILTERS: Final = {
    "author": "author_id = %(author)s",
    "tag": "%(tag)s = ANY(tags)",
    "prompt_id": "prompt_id = %(prompt_id)s",
    "visibility": "visibility = %(visibility)s",
    "updated_after": "updated_at > %(updated_after)s",
    "before": "created_position < %(before)s",
}
_NOT_DELETED: Final = "deleted_at IS NULL"
_CURSOR_KIND: Final = "entries"


@dataclass(frozen=True, slots=True)
class EntryFilter:
    author: UUID | None = None
    tag: str | None = None
    prompt_id: UUID | None = None
    visibility: str | None = None
    include_deleted: bool = False
    updated_after: datetime | None = None


def entry_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "title": row["title"],
        "body": row["body"],
        "tags": row["tags"],
        "visibility": row["visibility"],
        "prompt_id": str(row["prompt_id"]) if row["prompt_id"] else None,
        "author_id": str(row["author_id"]),
        "version": row["version"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "deleted_at": iso_or_none(row["deleted_at"]),
    }


def get_entry(conn: Conn, team_id: UUID, reader: UUID, entry_id: UUID) -> dict[str, Any] | None:
    return fetch_one(conn, SELECT_ENTRY, {"id": entry_id, "team_id": team_id, "reader": reader})


def list_entries(
    conn: Conn,
    team_id: UUID,
    reader: UUID,
    where_: EntryFilter,
    *,
    limit: int,
    cursor: str | None,
) -> Page:
    """One page of the entries ``reader`` may see; raises InvalidCursor."""
    params: dict[str, Any] = {
        "team_id": team_id,
        "reader": reader,
        "author": where_.author,
        "tag": where_.tag.lower() if where_.tag else None,
        "prompt_id": where_.prompt_id,
        "visibility": where_.visibility,
        "updated_after": where_.updated_after,
        "before": decode_cursor(_CURSOR_KIND, cursor, int)[0] if cursor else None,
        "limit": limit + 1,
    }
    always = [_VISIBLE] if where_.include_deleted else [_VISIBLE, _NOT_DELETED]
    query = LIST_ENTRIES.format(where(_FILTERS, params, *always))
    return page_of(fetch_all(conn, query, params), limit, _CURSOR_KIND, "created_position")
