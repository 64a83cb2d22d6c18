"""Monthly entry usage per team, and each team's current plan.

The limit is not stored: it is the current plan's quota, computed when read,
as the quota aggregate itself applies a plan change at once. A month's ETag
is the later of the positions that changed its usage row or the team's plan.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Final
from uuid import UUID

from psycopg import sql

from aggregates.plans import quota_for
from aggregates.quota import MonthlyQuota
from aggregates.team import Team
from projections.base import Fact, topic_of
from projections.folding import FoldingProjection, Key, MissingRow, Row, Table, TableFold
from projections.pagination import Page, decode_cursor, page_of
from projections.reading import Conn, fetch_all, fetch_one, where

__all__ = ["QuotasProjection", "get_usage", "list_usage", "usage_view"]

DDL: Final = """
CREATE TABLE team_plans (
    team_id uuid PRIMARY KEY,
    plan text NOT NULL,
    position bigint NOT NULL
);
CREATE TABLE quota_usage (
    id uuid PRIMARY KEY,
    team_id uuid NOT NULL,
    month text NOT NULL,
    used integer NOT NULL,
    threshold_reached boolean NOT NULL,
    updated_at timestamptz NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX quota_usage_team_month_idx ON quota_usage (team_id, month);
"""

TEAM_PLANS: Final = Table(
    "team_plans", key=(("team_id", "uuid"),), columns=("team_id", "plan", "position")
)
QUOTA_USAGE: Final = Table(
    "quota_usage",
    key=(("id", "uuid"),),
    columns=("id", "team_id", "month", "used", "threshold_reached", "updated_at", "position"),
)

# By topic, not by name: both aggregates have events, and Created is common.
TEAM_CREATED: Final = topic_of(Team, "Created")
PLAN_CHANGED: Final = topic_of(Team, "PlanChanged")
QUOTA_STARTED: Final = topic_of(MonthlyQuota, "Started")
ENTRY_COUNTED: Final = topic_of(MonthlyQuota, "EntryCounted")
THRESHOLD_REACHED: Final = topic_of(MonthlyQuota, "ThresholdReached")
_PLAN_TOPICS: Final = frozenset({TEAM_CREATED, PLAN_CHANGED})
_USAGE_TOPICS: Final = frozenset({QUOTA_STARTED, ENTRY_COUNTED, THRESHOLD_REACHED})


class TeamPlanFold(TableFold):
    table = TEAM_PLANS

    def keys(self, fact: Fact) -> Iterable[Key]:
        return ((fact.aggregate_id,),) if fact.topic in _PLAN_TOPICS else ()

    def creates(self, fact: Fact) -> bool:
        return fact.topic == TEAM_CREATED

    def fold(self, key: Key, row: Row | None, fact: Fact) -> Row | None:
        if fact.topic != TEAM_CREATED and row is None:
            raise MissingRow(f"team {fact.aggregate_id} has no plan row for {fact.name}")
        return {"team_id": fact.aggregate_id, "plan": fact.data["plan"], "position": fact.position}


class QuotaUsageFold(TableFold):
    table = QUOTA_USAGE

    def keys(self, fact: Fact) -> Iterable[Key]:
        return ((fact.aggregate_id,),) if fact.topic in _USAGE_TOPICS else ()

    def creates(self, fact: Fact) -> bool:
        return fact.topic == QUOTA_STARTED

    def fold(self, key: Key, row: Row | None, fact: Fact) -> Row | None:
        data = fact.data
        stamp = {"updated_at": data["timestamp"], "position": fact.position}
        if fact.topic == QUOTA_STARTED:
            return {
                "id": fact.aggregate_id,
                "team_id": data["team_id"],
                "month": data["month"],
                "used": 0,
                "threshold_reached": False,
                **stamp,
            }
        if row is None:
            raise MissingRow(f"quota {fact.aggregate_id} has no row for {fact.name}")
        if fact.topic == ENTRY_COUNTED:
            return {**row, "used": row["used"] + 1, **stamp}
        return {**row, "threshold_reached": True, **stamp}


class QuotasProjection(FoldingProjection):
    name = "quotas"
    version = 1
    tables = ("team_plans", "quota_usage")
    ddl = DDL
    folds = (TeamPlanFold(), QuotaUsageFold())
    handled: ClassVar[frozenset[str]] = _PLAN_TOPICS | _USAGE_TOPICS


# -- reads ---------------------------------------------------------------------------

# A month nobody wrote in has no row: it reads as nothing used yet.
SELECT_USAGE: Final = """
SELECT p.plan, coalesce(u.used, 0) AS used,
    coalesce(u.threshold_reached, false) AS threshold_reached,
    greatest(p.position, u.position) AS position
FROM reads.team_plans p
LEFT JOIN reads.quota_usage u ON u.team_id = p.team_id AND u.month = %(month)s
WHERE p.team_id = %(team_id)s
"""
LIST_USAGE: Final = sql.SQL(
    "SELECT u.month, u.used, u.threshold_reached, p.plan, "
    "greatest(p.position, u.position) AS position "
    "FROM reads.quota_usage u JOIN reads.team_plans p ON p.team_id = u.team_id "
    "WHERE {} ORDER BY u.month DESC LIMIT %(limit)s"
)
_IN_TEAM: Final = "u.team_id = %(team_id)s"
_FILTERS: Final = {"before": "u.month < %(before)s"}
_CURSOR_KIND: Final = "usage"


def usage_view(row: dict[str, Any]) -> dict[str, Any]:
    limit = quota_for(row["plan"])
    return {
        "month": row["month"],
        "used": row["used"],
        "limit": limit,
        "remaining": max(limit - row["used"], 0),
        "threshold_reached": row["threshold_reached"],
    }


def get_usage(conn: Conn, team_id: UUID, month: str) -> dict[str, Any] | None:
    """``month``'s usage (zero if nothing was written); None if the team is unknown."""
    row = fetch_one(conn, SELECT_USAGE, {"team_id": team_id, "month": month})
    return None if row is None else {**row, "month": month}


def list_usage(conn: Conn, team_id: UUID, *, limit: int, cursor: str | None) -> Page:
    """Months with usage, newest first; raises InvalidCursor."""
    params: dict[str, Any] = {
        "team_id": team_id,
        "before": decode_cursor(_CURSOR_KIND, cursor, str)[0] if cursor else None,
        "limit": limit + 1,
    }
    query = LIST_USAGE.format(where(_FILTERS, params, _IN_TEAM))
    return page_of(fetch_all(conn, query, params), limit, _CURSOR_KIND, "month")
