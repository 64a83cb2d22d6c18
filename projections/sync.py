"""The delta-sync feed: per bucket, one row per entity with its latest change.

A member reads the buckets they may see (their team's and their own) in
(position, seq) order. Moving an entity between buckets writes a
``delete``/``revoked`` row in the old bucket (seq 0) and an ``upsert`` in the new
one (seq 1) at the same position, so a reader of both ends with the upsert and
a reader of the old one only with the delete, and content never reaches anyone
outside its scope. Compaction keeps one row per (bucket, entity); tombstones
older than the retention are purged, and the horizon they leave makes older
cursors expire.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Final
from uuid import UUID

import psycopg
from psycopg import sql

from projections.base import Cursor, Fact, Projection
from projections.folding import Key, Table
from projections.pagination import decode_cursor, encode_cursor
from projections.reading import Conn, fetch_all, fetch_one
from projections.sync_fold import (
    ENTITY_TOPICS,
    EntityState,
    entity_key,
    fold_entity,
    team_bucket,
    user_bucket,
)

__all__ = ["CursorExpired", "SyncPage", "SyncProjection", "compact", "pull"]

DDL: Final = """
CREATE TABLE sync_entities (
    entity text NOT NULL,
    entity_id uuid NOT NULL,
    team_id uuid NOT NULL,
    bucket text NOT NULL,
    deleted boolean NOT NULL,
    version bigint NOT NULL,
    data jsonb NOT NULL,
    PRIMARY KEY (entity, entity_id)
);
CREATE TABLE sync_changes (
    bucket text NOT NULL,
    entity text NOT NULL,
    entity_id uuid NOT NULL,
    op text NOT NULL,
    reason text,
    version bigint NOT NULL,
    position bigint NOT NULL,
    seq smallint NOT NULL,
    data jsonb,
    changed_at timestamptz NOT NULL,
    PRIMARY KEY (bucket, entity, entity_id)
);
CREATE INDEX sync_changes_feed_idx ON sync_changes (bucket, position, seq);
CREATE INDEX sync_changes_tombstones_idx ON sync_changes (changed_at) WHERE op = 'delete';
CREATE TABLE sync_horizon (id integer PRIMARY KEY CHECK (id = 1), position bigint NOT NULL);
INSERT INTO sync_horizon VALUES (1, 0);
"""

ENTITIES: Final = Table(
    "sync_entities",
    key=(("entity", "text"), ("entity_id", "uuid")),
    columns=("entity", "entity_id", "team_id", "bucket", "deleted", "version", "data"),
    jsonb=frozenset({"data"}),
)
CHANGES: Final = Table(
    "sync_changes",
    key=(("bucket", "text"), ("entity", "text"), ("entity_id", "uuid")),
    columns=(
        "bucket", "entity", "entity_id", "op", "reason", "version", "position", "seq", "data",
        "changed_at",
    ),
    jsonb=frozenset({"data"}),
)  # fmt: skip


def _state(row: dict[str, Any]) -> EntityState:
    return EntityState(
        row["entity"], row["entity_id"], row["team_id"], row["bucket"], row["deleted"],
        row["version"], row["data"],
    )  # fmt: skip


def _change(state: EntityState, fact: Fact, *, seq: int, revoked: bool = False) -> dict[str, Any]:
    gone = revoked or state.deleted
    return {
        "bucket": state.bucket,
        "entity": state.entity,
        "entity_id": state.entity_id,
        "op": "delete" if gone else "upsert",
        "reason": ("revoked" if revoked else "deleted") if gone else None,
        "version": state.version,
        "position": fact.position,
        "seq": seq,
        "data": None if gone else state.data,
        "changed_at": fact.data["timestamp"],
    }


def _entity_row(state: EntityState) -> dict[str, Any]:
    return {
        "entity": state.entity,
        "entity_id": state.entity_id,
        "team_id": state.team_id,
        "bucket": state.bucket,
        "deleted": state.deleted,
        "version": state.version,
        "data": state.data,
    }


class SyncProjection(Projection):
    name = "sync"
    version = 2
    tables = ("sync_changes", "sync_horizon")
    ddl = DDL

    @property
    def topics(self) -> frozenset[str]:
        return ENTITY_TOPICS

    def apply(self, cur: Cursor, facts: Sequence[Fact]) -> None:
        keys: dict[Key, bool] = {}
        for fact in facts:
            keys.setdefault(entity_key(fact), fact.name in ("Created", "MemberAdded"))
        to_load = [key for key, created in keys.items() if not created]
        states: dict[Key, EntityState | None] = {key: None for key in keys}
        if to_load:
            states.update({k: _state(r) for k, r in ENTITIES.load(cur, to_load).items()})
        changes: dict[Key, dict[str, Any]] = {}
        for fact in facts:
            key = entity_key(fact)
            before = states[key]
            after = fold_entity(before, fact)
            states[key] = after
            if before is not None and before.bucket != after.bucket and not before.deleted:
                # Delete first: a reader of both buckets ends with the upsert.
                revoke = _change(replace(before, version=after.version), fact, seq=0, revoked=True)
                changes[(before.bucket, *key)] = revoke
            changes[(after.bucket, *key)] = _change(after, fact, seq=1)
        ENTITIES.write(cur, [_entity_row(s) for s in states.values() if s is not None], [])
        CHANGES.write(cur, list(changes.values()), [])


# -- reads ---------------------------------------------------------------------------

CURSOR_KIND: Final = "sync"
_LAST_SEQ: Final = 32767  # past every change at a position
# One index range scan per bucket, merged: a page's cost does not grow with the log.
SELECT_PAGE: Final = """
SELECT entity, entity_id, op, reason, version, position, seq, data FROM (
    (SELECT * FROM reads.sync_changes
     WHERE bucket = %(team)s AND (position, seq) > (%(position)s, %(seq)s)
       AND (op = 'upsert' OR position > %(full_until)s)
     ORDER BY position, seq LIMIT %(limit)s)
    UNION ALL
    (SELECT * FROM reads.sync_changes
     WHERE bucket = %(user)s AND (position, seq) > (%(position)s, %(seq)s)
       AND (op = 'upsert' OR position > %(full_until)s)
     ORDER BY position, seq LIMIT %(limit)s)
) page ORDER BY position, seq LIMIT %(limit)s
"""
SELECT_HORIZON: Final = "SELECT position FROM reads.sync_horizon WHERE id = 1"
SELECT_SYNC_POSITION: Final = (
    "SELECT position FROM projection_generations WHERE projection = 'sync' AND state = 'active'"
)


class CursorExpired(Exception):
    """The cursor is older than the tombstone horizon: start again from no cursor."""

    def __init__(self, horizon: int) -> None:
        super().__init__("the cursor is older than the retained history; sync from no cursor")
        self.horizon = horizon


@dataclass(frozen=True, slots=True)
class SyncPage:
    changes: list[dict[str, Any]]
    cursor: str
    has_more: bool


def _change_view(row: dict[str, Any]) -> dict[str, Any]:
    change = {
        "entity": row["entity"],
        "id": str(row["entity_id"]),
        "op": row["op"],
        "version": row["version"],
        "position": row["position"],
        "data": row["data"],
    }
    if row["reason"] is not None:
        change["reason"] = row["reason"]
    return change


def pull(conn: Conn, team_id: UUID, user_id: UUID, cursor: str | None, limit: int) -> SyncPage:
    """The next page of changes for ``user_id`` after ``cursor`` (None: a full sync).

    Raises InvalidCursor or CursorExpired.
    """
    # Read before the page: every change at or below it is visible to the page
    # query, so an empty page may safely move the cursor up to it.
    applied_row = fetch_one(conn, SELECT_SYNC_POSITION, {})
    applied = int(applied_row["position"]) if applied_row else 0
    if cursor is None:
        position, seq, full_until = 0, 0, applied
    else:
        position, seq, full_until = decode_cursor(CURSOR_KIND, cursor, int, int, int)
        horizon = fetch_one(conn, SELECT_HORIZON, {})
        if horizon is not None and position < horizon["position"]:
            raise CursorExpired(int(horizon["position"]))
    params = {
        "team": team_bucket(team_id),
        "user": user_bucket(user_id),
        "position": position,
        "seq": seq,
        "full_until": full_until,
        "limit": limit + 1,
    }
    rows = fetch_all(conn, SELECT_PAGE, params)
    has_more = len(rows) > limit
    rows = rows[:limit]
    if rows:
        position, seq = rows[-1]["position"], rows[-1]["seq"]
    if not has_more and applied > position:
        # Caught up: everything up to ``applied`` was seen, so the cursor may
        # move there, which keeps idle clients' cursors clear of the horizon.
        position, seq = applied, _LAST_SEQ
    return SyncPage(
        [_change_view(r) for r in rows],
        encode_cursor(CURSOR_KIND, position, seq, full_until),
        has_more,
    )


# -- compaction ----------------------------------------------------------------------

PURGE_TOMBSTONES: Final = """
WITH purged AS (
    DELETE FROM sync_changes WHERE op = 'delete' AND changed_at < now() - %(retention)s
    RETURNING position
)
UPDATE sync_horizon SET position = greatest(position, (SELECT max(position) FROM purged))
WHERE id = 1 AND EXISTS (SELECT 1 FROM purged)
"""
COUNT_PURGED: Final = "SELECT count(*) FROM sync_changes"


def compact(conn: psycopg.Connection[Any], schema: str, retention_seconds: float) -> int:
    """Purges tombstones older than the retention from ``schema`` (the active
    generation's); returns how many change rows remain."""
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(schema)))
        conn.execute(PURGE_TOMBSTONES, {"retention": timedelta(seconds=retention_seconds)})
        row = conn.execute(COUNT_PURGED).fetchone()
    return int(row[0]) if row else 0
