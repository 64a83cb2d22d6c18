"""Teams as they stand: the team, its members, and its API keys' public records.

Every Team event bumps the team row's version, so a team's ETag is its
aggregate's version and clients can send it back as If-Match. Members and keys
are changed only through the team, so their ETag is the team's version too.
Key rows never hold the secret's hash: no reader needs it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Final
from uuid import UUID

from psycopg import sql

from aggregates.base import Role
from aggregates.team import Team
from projections.base import Fact, topic_of
from projections.folding import (
    AggregateRowFold,
    FoldingProjection,
    Key,
    MissingRow,
    Row,
    Table,
    TableFold,
)
from projections.pagination import Page, decode_cursor, page_of
from projections.reading import Conn, fetch_all, fetch_one, iso, iso_or_none, where

__all__ = [
    "TeamsProjection",
    "api_key_view",
    "get_api_key",
    "get_member",
    "get_team",
    "list_api_keys",
    "list_members",
    "member_view",
    "team_view",
]

DDL: Final = """
CREATE TABLE teams (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    plan text NOT NULL,
    version bigint NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    position bigint NOT NULL
);
CREATE TABLE team_members (
    team_id uuid NOT NULL,
    user_id uuid NOT NULL,
    email text NOT NULL,
    display_name text NOT NULL,
    role text NOT NULL,
    joined_at timestamptz NOT NULL,
    joined_position bigint NOT NULL,
    position bigint NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_joined_idx ON team_members (team_id, joined_position);
CREATE TABLE api_keys (
    key_id text PRIMARY KEY,
    team_id uuid NOT NULL,
    user_id uuid NOT NULL,
    name text NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz,
    revoke_reason text,
    created_position bigint NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX api_keys_team_idx ON api_keys (team_id, created_position);
CREATE INDEX api_keys_holder_idx ON api_keys (team_id, user_id, created_position);
"""

TEAMS: Final = Table(
    "teams",
    key=(("id", "uuid"),),
    columns=("id", "name", "plan", "version", "created_at", "updated_at", "position"),
)
TEAM_MEMBERS: Final = Table(
    "team_members",
    key=(("team_id", "uuid"), ("user_id", "uuid")),
    columns=(
        "team_id", "user_id", "email", "display_name", "role", "joined_at", "joined_position",
        "position",
    ),
)  # fmt: skip
API_KEYS: Final = Table(
    "api_keys",
    key=(("key_id", "text"),),
    columns=(
        "key_id", "team_id", "user_id", "name", "created_at", "revoked_at", "revoke_reason",
        "created_position", "position",
    ),
)  # fmt: skip

_EVENTS: Final = (
    "Created", "Renamed", "PlanChanged", "MemberAdded", "MemberRoleChanged", "MemberRemoved",
    "ApiKeyIssued", "ApiKeyRevoked",
)  # fmt: skip
_MEMBER_EVENTS: Final = frozenset({"MemberAdded", "MemberRoleChanged", "MemberRemoved"})
_KEY_EVENTS: Final = frozenset({"ApiKeyIssued", "ApiKeyRevoked"})


def _existing(row: Row | None, fact: Fact, what: str) -> Row:
    if row is None:
        raise MissingRow(f"{what} of team {fact.aggregate_id} has no row for {fact.name}")
    return row


class TeamFold(AggregateRowFold):
    table = TEAMS
    what = "team"

    def created(self, fact: Fact) -> Row:
        return {"id": fact.aggregate_id, "name": fact.data["name"], "plan": fact.data["plan"]}

    def changed(self, row: Row, fact: Fact) -> Row | None:
        match fact.name:
            case "Renamed":
                return {"name": fact.data["name"]}
            case "PlanChanged":
                return {"plan": fact.data["plan"]}
        return {}  # member and key events change the team's version only


class MemberFold(TableFold):
    table = TEAM_MEMBERS

    def keys(self, fact: Fact) -> Iterable[Key]:
        if fact.name == "Created":
            return ((fact.aggregate_id, fact.data["owner_user_id"]),)
        if fact.name in _MEMBER_EVENTS:
            return ((fact.aggregate_id, fact.data["user_id"]),)
        return ()

    def creates(self, fact: Fact) -> bool:
        # The team refuses to add a current member, so an added member has no row.
        return fact.name in ("Created", "MemberAdded")

    def fold(self, key: Key, row: Row | None, fact: Fact) -> Row | None:
        data = fact.data
        if fact.name == "Created":
            return _joined(key, fact, data["owner_email"], data["owner_display_name"], Role.OWNER)
        if fact.name == "MemberAdded":
            return _joined(key, fact, data["email"], data["display_name"], data["role"])
        row = _existing(row, fact, f"member {key[1]}")
        if fact.name == "MemberRemoved":
            return None
        return {**row, "role": str(data["role"]), "position": fact.position}


def _joined(key: Key, fact: Fact, email: str, display_name: str, role: Role) -> Row:
    team_id, user_id = key
    return {
        "team_id": team_id,
        "user_id": user_id,
        "email": email,
        "display_name": display_name,
        "role": str(role),
        "joined_at": fact.data["timestamp"],
        "joined_position": fact.position,
        "position": fact.position,
    }


class ApiKeyFold(TableFold):
    table = API_KEYS

    def keys(self, fact: Fact) -> Iterable[Key]:
        return ((fact.data["key_id"],),) if fact.name in _KEY_EVENTS else ()

    def creates(self, fact: Fact) -> bool:
        return fact.name == "ApiKeyIssued"

    def fold(self, key: Key, row: Row | None, fact: Fact) -> Row | None:
        data = fact.data
        if fact.name == "ApiKeyIssued":
            # Field by field: the event's secret_hash must never reach a read table.
            return {
                "key_id": data["key_id"],
                "team_id": fact.aggregate_id,
                "user_id": data["user_id"],
                "name": data["name"],
                "created_at": data["timestamp"],
                "revoked_at": None,
                "revoke_reason": None,
                "created_position": fact.position,
                "position": fact.position,
            }
        row = _existing(row, fact, f"API key {key[0]}")
        return {
            **row,
            "revoked_at": data["timestamp"],
            "revoke_reason": data["reason"],
            "position": fact.position,
        }


class TeamsProjection(FoldingProjection):
    name = "teams"
    version = 1
    tables = ("teams", "team_members", "api_keys")
    ddl = DDL
    folds = (TeamFold(), MemberFold(), ApiKeyFold())
    handled: ClassVar[frozenset[str]] = frozenset(topic_of(Team, e) for e in _EVENTS)


# -- reads ---------------------------------------------------------------------------

# One statement, so the members and the version come from one snapshot even
# while a batch commits. json (not jsonb) keeps each member's keys in order.
SELECT_TEAM: Final = """
SELECT t.id, t.name, t.plan, t.version,
    coalesce((
        SELECT json_agg(json_build_object(
            'user_id', m.user_id, 'email', m.email,
            'display_name', m.display_name, 'role', m.role
        ) ORDER BY m.joined_position)
        FROM reads.team_members m WHERE m.team_id = t.id
    ), '[]'::json) AS members
FROM reads.teams t WHERE t.id = %(team_id)s
"""
SELECT_MEMBER: Final = """
SELECT m.user_id, m.email, m.display_name, m.role, m.joined_at, t.version
FROM reads.team_members m JOIN reads.teams t ON t.id = m.team_id
WHERE m.team_id = %(team_id)s AND m.user_id = %(user_id)s
"""
LIST_MEMBERS: Final = sql.SQL(
    "SELECT user_id, email, display_name, role, joined_at, joined_position "
    "FROM reads.team_members WHERE {} ORDER BY joined_position LIMIT %(limit)s"
)
SELECT_API_KEY: Final = sql.SQL(
    "SELECT k.key_id, k.user_id, k.name, k.created_at, k.revoked_at, k.revoke_reason, "
    "t.version FROM reads.api_keys k JOIN reads.teams t ON t.id = k.team_id WHERE {}"
)
LIST_API_KEYS: Final = sql.SQL(
    "SELECT key_id, user_id, name, created_at, revoked_at, revoke_reason, created_position "
    "FROM reads.api_keys WHERE {} ORDER BY created_position LIMIT %(limit)s"
)
_IN_TEAM: Final = "team_id = %(team_id)s"
_MEMBERS_AFTER: Final = {"after": "joined_position > %(after)s"}
# A holder is set for readers who may see their own keys only.
_KEYS_FILTERS: Final = {
    "holder": "user_id = %(holder)s",
    "after": "created_position > %(after)s",
}
_THE_KEY: Final = "k.team_id = %(team_id)s AND k.key_id = %(key_id)s"
_KEY_FILTERS: Final = {"holder": "k.user_id = %(holder)s"}
_MEMBERS_CURSOR: Final = "members"
_KEYS_CURSOR: Final = "api_keys"


def team_view(row: dict[str, Any]) -> dict[str, Any]:
    """The shape commands.teams.team_view gives, which clients rely on."""
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "plan": row["plan"],
        "version": row["version"],
        "members": row["members"],
    }


def member_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "user_id": str(row["user_id"]),
        "email": row["email"],
        "display_name": row["display_name"],
        "role": row["role"],
        "joined_at": iso(row["joined_at"]),
    }


def api_key_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "key_id": row["key_id"],
        "user_id": str(row["user_id"]),
        "name": row["name"],
        "created_at": iso(row["created_at"]),
        "revoked_at": iso_or_none(row["revoked_at"]),
        "revoke_reason": row["revoke_reason"],
    }


def get_team(conn: Conn, team_id: UUID) -> dict[str, Any] | None:
    return fetch_one(conn, SELECT_TEAM, {"team_id": team_id})


def get_member(conn: Conn, team_id: UUID, user_id: UUID) -> dict[str, Any] | None:
    """The member, with the team's version (their ETag)."""
    return fetch_one(conn, SELECT_MEMBER, {"team_id": team_id, "user_id": user_id})


def list_members(conn: Conn, team_id: UUID, *, limit: int, cursor: str | None) -> Page:
    """Members in the order they joined; raises InvalidCursor."""
    after = decode_cursor(_MEMBERS_CURSOR, cursor, int)[0] if cursor else None
    params = {"team_id": team_id, "after": after, "limit": limit + 1}
    query = LIST_MEMBERS.format(where(_MEMBERS_AFTER, params, _IN_TEAM))
    return page_of(fetch_all(conn, query, params), limit, _MEMBERS_CURSOR, "joined_position")


def get_api_key(
    conn: Conn, team_id: UUID, key_id: str, *, holder: UUID | None
) -> dict[str, Any] | None:
    """The key with the team's version (its ETag); with ``holder``, only if it is theirs."""
    params = {"team_id": team_id, "key_id": key_id, "holder": holder}
    query = SELECT_API_KEY.format(where(_KEY_FILTERS, params, _THE_KEY))
    return fetch_one(conn, query, params)


def list_api_keys(
    conn: Conn, team_id: UUID, *, holder: UUID | None, limit: int, cursor: str | None
) -> Page:
    """Keys oldest first, all of the team's or only ``holder``'s; raises InvalidCursor."""
    after = decode_cursor(_KEYS_CURSOR, cursor, int)[0] if cursor else None
    params = {"team_id": team_id, "holder": holder, "after": after, "limit": limit + 1}
    query = LIST_API_KEYS.format(where(_KEYS_FILTERS, params, _IN_TEAM))
    return page_of(fetch_all(conn, query, params), limit, _KEYS_CURSOR, "created_position")
