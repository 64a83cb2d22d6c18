"""Members' notification preferences as they stand: one row per (member, kind)
a member ever changed; a kind with no row has the defaults
(``aggregates.notification_preferences.DEFAULT_CHANNELS``).

Read by the preferences routes, the notification consumer and the daily
digest job (``reads.notification_preferences``). A change event names only
its aggregate, so the aggregate's team and member are kept in
``notification_preference_holders`` (from its creation) and copied onto each
preference row: readers need no join.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Final
from uuid import UUID

from aggregates.notification_preferences import (
    DEFAULT_CHANNELS,
    Channels,
    NotificationKind,
    NotificationPreferences,
)
from projections.base import Cursor, Fact, topic_of
from projections.folding import FoldingProjection, Key, MissingRow, Row, Table, TableFold
from projections.reading import Conn, fetch_all

__all__ = [
    "SELECT_FOR_MEMBERS",
    "NotificationPreferencesProjection",
    "channels_of",
    "preferences_of",
]

DDL: Final = """
CREATE TABLE notification_preference_holders (
    id uuid PRIMARY KEY,
    team_id uuid NOT NULL,
    user_id uuid NOT NULL,
    position bigint NOT NULL
);
CREATE TABLE notification_preferences (
    team_id uuid NOT NULL,
    user_id uuid NOT NULL,
    kind text NOT NULL,
    inbox boolean NOT NULL,
    email boolean NOT NULL,
    digest boolean NOT NULL,
    updated_at timestamptz NOT NULL,
    position bigint NOT NULL,
    PRIMARY KEY (team_id, user_id, kind)
);
"""

HOLDERS: Final = Table(
    "notification_preference_holders",
    key=(("id", "uuid"),),
    columns=("id", "team_id", "user_id", "position"),
)
PREFERENCES: Final = Table(
    "notification_preferences",
    key=(("team_id", "uuid"), ("user_id", "uuid"), ("kind", "text")),
    columns=("team_id", "user_id", "kind", "inbox", "email", "digest", "updated_at", "position"),
)

CREATED: Final = topic_of(NotificationPreferences, "Created")
KIND_CHANGED: Final = topic_of(NotificationPreferences, "KindChanged")


class HolderFold(TableFold):
    table = HOLDERS

    def keys(self, fact: Fact) -> Iterable[Key]:
        return ((fact.aggregate_id,),) if fact.topic == CREATED else ()

    def creates(self, fact: Fact) -> bool:
        return True

    def fold(self, key: Key, row: Row | None, fact: Fact) -> Row | None:
        return {
            "id": fact.aggregate_id,
            "team_id": fact.data["team_id"],
            "user_id": fact.data["user_id"],
            "position": fact.position,
        }


class PreferenceFold(TableFold):
    """Each change carries all three flags of its kind, so a row is written, never
    read: the batch's last change of a (member, kind) wins. The holders are
    written first (folds apply in order), so this batch's new ones are found."""

    table = PREFERENCES

    def keys(self, fact: Fact) -> Iterable[Key]:  # pragma: no cover - apply is overridden
        return ()

    def fold(self, key: Key, row: Row | None, fact: Fact) -> Row | None:
        return row  # pragma: no cover - apply is overridden

    def apply(self, cur: Cursor, facts: Sequence[Fact]) -> None:
        changes = [f for f in facts if f.topic == KIND_CHANGED]
        if not changes:
            return
        ids = sorted({(f.aggregate_id,) for f in changes})
        holders = HOLDERS.load(cur, ids)
        rows: dict[Key, Row] = {}
        for fact in changes:
            holder = holders.get((fact.aggregate_id,))
            if holder is None:
                raise MissingRow(f"preferences {fact.aggregate_id} have no holder for {fact.name}")
            data = fact.data
            row = {
                "team_id": holder["team_id"],
                "user_id": holder["user_id"],
                "kind": data["kind"],
                "inbox": data["inbox"],
                "email": data["email"],
                "digest": data["digest"],
                "updated_at": data["timestamp"],
                "position": fact.position,
            }
            rows[PREFERENCES.key_of(row)] = row
        PREFERENCES.write(cur, list(rows.values()), [])


class NotificationPreferencesProjection(FoldingProjection):
    name = "notification_preferences"
    version = 1
    tables = ("notification_preference_holders", "notification_preferences")
    ddl = DDL
    folds = (HolderFold(), PreferenceFold())
    handled: ClassVar[frozenset[str]] = frozenset({CREATED, KIND_CHANGED})


# -- reads ---------------------------------------------------------------------------

SELECT_OF_MEMBER: Final = """
SELECT kind, inbox, email, digest FROM reads.notification_preferences
WHERE team_id = %(team_id)s AND user_id = %(user_id)s
"""
# For the consumer: the set flags of the (team, member, kind) triples given.
SELECT_FOR_MEMBERS: Final = """
SELECT p.team_id, p.user_id, p.kind, p.inbox, p.email, p.digest
FROM reads.notification_preferences p
JOIN unnest(%(teams)s::uuid[], %(users)s::uuid[], %(kinds)s::text[]) AS w (team_id, user_id, kind)
    ON p.team_id = w.team_id AND p.user_id = w.user_id AND p.kind = w.kind
"""


def channels_of(row: dict[str, Any] | None) -> Channels:
    """A kind's flags from its row; the defaults when it has none."""
    if row is None:
        return DEFAULT_CHANNELS
    return Channels(inbox=row["inbox"], email=row["email"], digest=row["digest"])


def preferences_of(conn: Conn, team_id: UUID, user_id: UUID) -> list[tuple[str, Channels, bool]]:
    """Every kind with its effective flags and whether the member ever set it."""
    rows = fetch_all(conn, SELECT_OF_MEMBER, {"team_id": team_id, "user_id": user_id})
    by_kind = {row["kind"]: row for row in rows}
    return [
        (kind.value, channels_of(by_kind.get(kind.value)), kind.value in by_kind)
        for kind in NotificationKind
    ]
