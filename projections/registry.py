"""Generations of projections: which one readers see, how far each has got,
and which one is stalled. Every statement is a named query; schema and view
names are identifiers composed by psycopg, never values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from projections.base import Projection

__all__ = [
    "PROGRESS_CHANNEL",
    "Activated",
    "Generation",
    "LostOwnership",
    "NotStalled",
    "advance",
    "create_generation",
    "drop_retired_schemas",
    "drop_schema",
    "generations",
    "load",
    "log_action",
    "retry",
    "schema_of",
    "skip",
    "stall",
    "try_activate",
]

# Runners announce each committed batch here ("name generation position state"),
# so API processes can answer read-your-writes waits without polling.
PROGRESS_CHANNEL: Final = "chronik_projection_progress"
_MAX_ERROR_CHARS: Final = 2000
# Serialises creating generations of one projection across processes.
_CREATE_LOCK_CLASS: Final = 0x6368


class LostOwnership(Exception):
    """The generation moved on without us (retired, stalled, or advanced by
    another runner): the batch is rolled back and the runner looks again."""


class NotStalled(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Generation:
    id: int
    projection: str
    version: int
    state: str
    position: int
    applied_events: int
    stalled_position: int | None
    stalled_error: str | None
    stalled_at: datetime | None
    updated_at: datetime

    @property
    def schema(self) -> str:
        return schema_of(self.id)

    @property
    def stalled(self) -> bool:
        return self.stalled_position is not None


def schema_of(generation_id: int) -> str:
    return f"chronik_proj_{generation_id}"


_SELECT: Final = sql.SQL(
    "SELECT id, projection, version, state, position, applied_events, stalled_position, "
    "stalled_error, stalled_at, updated_at FROM projection_generations "
)
SELECT_GENERATION: Final = _SELECT + sql.SQL("WHERE id = %s")
SELECT_LIVE: Final = _SELECT + sql.SQL("WHERE projection = %s AND state <> 'retired' ORDER BY id")
SELECT_ALL_LIVE: Final = _SELECT + sql.SQL("WHERE state <> 'retired' ORDER BY projection, id")
LOCK_LIVE: Final = _SELECT + sql.SQL(
    "WHERE projection = %s AND state <> 'retired' ORDER BY id FOR UPDATE"
)
INSERT_GENERATION: Final = (
    "INSERT INTO projection_generations (projection, version, state, activated_at) "
    "VALUES (%s, %s, %s, CASE WHEN %s = 'active' THEN now() END) RETURNING id"
)
ADVANCE: Final = """
UPDATE projection_generations
SET position = %(to)s, applied_events = applied_events + %(applied)s, updated_at = now()
WHERE id = %(id)s AND position = %(from)s AND state <> 'retired' AND stalled_position IS NULL
"""
STALL: Final = """
UPDATE projection_generations
SET stalled_position = %(position)s, stalled_error = %(error)s, stalled_at = now(),
    updated_at = now()
WHERE id = %(id)s AND state <> 'retired'
"""
RETRY: Final = """
UPDATE projection_generations
SET stalled_position = NULL, stalled_error = NULL, stalled_at = NULL, updated_at = now()
WHERE projection = %s AND state <> 'retired' AND stalled_position IS NOT NULL
RETURNING id, stalled_position
"""
SKIP: Final = """
UPDATE projection_generations
SET position = stalled_position, stalled_position = NULL, stalled_error = NULL,
    stalled_at = NULL, updated_at = now()
WHERE projection = %s AND state <> 'retired' AND stalled_position = %s
RETURNING id
"""
RETIRE: Final = (
    "UPDATE projection_generations SET state = 'retired', retired_at = now(), updated_at = now() "
    "WHERE id = %s"
)
ACTIVATE: Final = (
    "UPDATE projection_generations SET state = 'active', activated_at = now(), updated_at = now() "
    "WHERE id = %s"
)
INSERT_LOG: Final = (
    "INSERT INTO projection_log (projection, generation, action, position, detail) "
    "VALUES (%s, %s, %s, %s, %s)"
)
NOTIFY_PROGRESS: Final = "SELECT pg_notify(%s, %s)"
LOCK_CREATION: Final = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"

Conn = psycopg.Connection[Any]


def load(conn: Conn, generation_id: int) -> Generation | None:
    with conn.cursor(row_factory=class_row(Generation)) as cur:
        return cur.execute(SELECT_GENERATION, (generation_id,)).fetchone()


def generations(conn: Conn, projection: str | None = None) -> list[Generation]:
    """Live (building or active) generations, of one projection or of all."""
    with conn.cursor(row_factory=class_row(Generation)) as cur:
        if projection is None:
            return cur.execute(SELECT_ALL_LIVE).fetchall()
        return cur.execute(SELECT_LIVE, (projection,)).fetchall()


def log_action(
    conn: Conn, projection: str, generation: int, action: str, *, position: int | None, detail: str
) -> None:
    conn.execute(INSERT_LOG, (projection, generation, action, position, detail))


def create_generation(conn: Conn, projection: Projection, *, rebuild: bool = False) -> Generation:
    """A new generation with empty tables. The first one of a projection is
    active at once (there is nothing to keep serving); later ones build beside
    the active one. An existing generation of this code version is returned
    instead (with ``rebuild``, only one still building, so an interrupted
    rebuild resumes), so racing processes create one between them."""
    with conn.transaction():
        conn.execute(LOCK_CREATION, (_CREATE_LOCK_CLASS, projection.name))
        live = generations(conn, projection.name)
        for found in live:
            if found.version == projection.version and (not rebuild or found.state == "building"):
                return found
        state = "building" if any(g.state == "active" for g in live) else "active"
        row = conn.execute(
            INSERT_GENERATION, (projection.name, projection.version, state, state)
        ).fetchone()
        assert row is not None
        generation_id: int = row[0] if isinstance(row, tuple) else row["id"]
        schema = sql.Identifier(schema_of(generation_id))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(schema))
        conn.execute(projection.ddl.encode())
        if state == "active":
            _point_views(conn, projection, schema_of(generation_id))
        log_action(
            conn,
            projection.name,
            generation_id,
            "create",
            position=0,
            detail=f"v{projection.version}",
        )
    created = load(conn, generation_id)
    assert created is not None
    return created


def _point_views(conn: Conn, projection: Projection, schema: str) -> None:
    for table in projection.tables:
        view = sql.Identifier("reads", table)
        conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(view))
        conn.execute(
            sql.SQL("CREATE VIEW {} AS SELECT * FROM {}").format(
                view, sql.Identifier(schema, table)
            )
        )


def advance(
    conn: Conn, generation: Generation, to: int, applied: int, *, announce: bool = True
) -> None:
    """Record that the batch up to ``to`` is applied: inside the batch's
    transaction, and only if nobody else moved this generation meanwhile."""
    params = {"id": generation.id, "from": generation.position, "to": to, "applied": applied}
    if conn.execute(ADVANCE, params).rowcount != 1:
        raise LostOwnership(f"generation {generation.id} changed under its runner")
    if announce:
        payload = f"{generation.projection} {generation.id} {to} {generation.state}"
        conn.execute(NOTIFY_PROGRESS, (PROGRESS_CHANNEL, payload))


def stall(conn: Conn, generation: Generation, position: int, error: str) -> None:
    with conn.transaction():
        conn.execute(
            STALL, {"id": generation.id, "position": position, "error": error[:_MAX_ERROR_CHARS]}
        )
        log_action(
            conn,
            generation.projection,
            generation.id,
            "stall",
            position=position,
            detail=error[:500],
        )


def retry(conn: Conn, projection: str) -> list[tuple[int, int]]:
    """Clears the stall of ``projection``'s generations; (generation, position) cleared."""
    with conn.transaction():
        cleared = [(row[0], row[1]) for row in conn.execute(RETRY, (projection,)).fetchall()]
        for generation_id, position in cleared:
            log_action(conn, projection, generation_id, "retry", position=position, detail="")
    return cleared


def skip(conn: Conn, projection: str, position: int, reason: str) -> list[int]:
    """Marks the stalled event at ``position`` as applied without applying it.
    Refused unless that is exactly where the projection stalled."""
    with conn.transaction():
        skipped = [row[0] for row in conn.execute(SKIP, (projection, position)).fetchall()]
        if not skipped:
            raise NotStalled(f"{projection} is not stalled at position {position}")
        for generation_id in skipped:
            log_action(conn, projection, generation_id, "skip", position=position, detail=reason)
    return skipped


@dataclass(frozen=True, slots=True)
class Activated:
    previous: Generation | None


def analyze(conn: Conn, projection: Projection, generation: Generation) -> None:
    """Gather the planner's statistics on a generation's tables."""
    for table in projection.tables:
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(generation.schema, table)))


def try_activate(conn: Conn, projection: Projection, generation: Generation) -> Activated | None:
    """Make a caught-up building generation the one readers see, in one
    transaction with the view swap, and retire the previous one. Refused while
    the active generation is further along: readers must never go back."""
    with conn.transaction():
        live = {g.id: g for g in _lock_live(conn, projection.name)}
        mine = live.get(generation.id)
        if mine is None or mine.state != "building" or mine.stalled:
            return None
        previous = next((g for g in live.values() if g.state == "active"), None)
        if previous is not None and previous.position > mine.position:
            return None
        if previous is not None:
            conn.execute(RETIRE, (previous.id,))
            log_action(
                conn, projection.name, previous.id, "retire", position=previous.position, detail=""
            )
        conn.execute(ACTIVATE, (mine.id,))
        _point_views(conn, projection, mine.schema)
        log_action(conn, projection.name, mine.id, "activate", position=mine.position, detail="")
    return Activated(previous)


def _lock_live(conn: Conn, projection: str) -> list[Generation]:
    with conn.cursor(row_factory=class_row(Generation)) as cur:
        return cur.execute(LOCK_LIVE, (projection,)).fetchall()


SELECT_RETIRED_SCHEMAS: Final = """
SELECT g.id FROM projection_generations g
JOIN pg_namespace n ON n.nspname = 'chronik_proj_' || g.id
WHERE g.state = 'retired'
"""


def drop_schema(conn: Conn, generation_id: int) -> None:
    conn.execute(
        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema_of(generation_id)))
    )


def drop_retired_schemas(conn: Conn) -> list[int]:
    """Tables of retired generations that a switch could not drop at once
    (a reader or an old runner held them); dropped when nobody does."""
    retired = [row[0] for row in conn.execute(SELECT_RETIRED_SCHEMAS).fetchall()]
    for generation_id in retired:
        drop_schema(conn, generation_id)
    return retired
