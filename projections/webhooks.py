"""Webhook endpoints as they stand; a deleted endpoint's row is removed.

Only the current secret's fingerprint is kept, never a secret or a secret's
id: the events carry no secret, and readers need only tell secrets apart.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final
from uuid import UUID

from psycopg import sql

from aggregates.webhook_endpoint import WebhookEndpoint
from projections.base import Fact, topic_of
from projections.folding import (
    AggregateRowFold,
    FoldingProjection,
    Row,
    Table,
)
from projections.pagination import Page, decode_cursor, page_of
from projections.reading import Conn, fetch_all, fetch_one, iso, where

__all__ = ["WebhooksProjection", "get_webhook", "list_webhooks", "webhook_view"]

DDL: Final = """
CREATE TABLE webhooks (
    id uuid PRIMARY KEY,
    team_id uuid NOT NULL,
    url text NOT NULL,
    event_types text[] NOT NULL,
    description text NOT NULL,
    enabled boolean NOT NULL,
    disabled_reason text,
    secret_fingerprint text NOT NULL,
    version bigint NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    created_position bigint NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX webhooks_team_idx ON webhooks (team_id, created_position DESC);
"""

WEBHOOKS: Final = Table(
    "webhooks",
    key=(("id", "uuid"),),
    columns=(
        "id", "team_id", "url", "event_types", "description", "enabled", "disabled_reason",
        "secret_fingerprint", "version", "created_at", "updated_at", "created_position",
        "position",
    ),
)  # fmt: skip

_EVENTS: Final = ("Registered", "Updated", "SecretRotated", "Disabled", "Enabled", "Deleted")


class WebhookFold(AggregateRowFold):
    table = WEBHOOKS
    what = "webhook"
    created_by = "Registered"

    def created(self, fact: Fact) -> Row:
        data = fact.data
        return {
            "id": fact.aggregate_id,
            "team_id": data["team_id"],
            "url": data["url"],
            "event_types": list(data["event_types"]),
            "description": data["description"],
            "enabled": True,
            "disabled_reason": None,
            "secret_fingerprint": data["secret_fingerprint"],
            "created_position": fact.position,
        }

    def changed(self, row: Row, fact: Fact) -> Row | None:
        data = fact.data
        match fact.name:
            case "Updated":
                return {
                    "url": data["url"],
                    "event_types": list(data["event_types"]),
                    "description": data["description"],
                }
            case "SecretRotated":
                return {"secret_fingerprint": data["new_fingerprint"]}
            case "Disabled":
                return {"enabled": False, "disabled_reason": data["reason"]}
            case "Enabled":
                return {"enabled": True, "disabled_reason": None}
            case "Deleted":
                return None
        return {}


class WebhooksProjection(FoldingProjection):
    name = "webhooks"
    version = 1
    tables = ("webhooks",)
    ddl = DDL
    folds = (WebhookFold(),)
    handled: ClassVar[frozenset[str]] = frozenset(topic_of(WebhookEndpoint, e) for e in _EVENTS)


# -- reads ---------------------------------------------------------------------------

SELECT_WEBHOOK: Final = """
SELECT id, url, event_types, description, enabled, disabled_reason, secret_fingerprint,
    version, created_at, updated_at
FROM reads.webhooks WHERE id = %(id)s AND team_id = %(team_id)s
"""
LIST_WEBHOOKS: Final = sql.SQL(
    "SELECT id, url, event_types, description, enabled, disabled_reason, secret_fingerprint, "
    "version, created_at, updated_at, created_position "
    "FROM reads.webhooks WHERE {} ORDER BY created_position DESC LIMIT %(limit)s"
)
_IN_TEAM: Final = "team_id = %(team_id)s"
_FILTERS: Final = {"before": "created_position < %(before)s"}
_CURSOR_KIND: Final = "webhooks"


def webhook_view(row: dict[str, Any]) -> dict[str, Any]:
    """The shape commands.webhooks.webhook_view gives, which clients rely on."""
    return {
        "id": str(row["id"]),
        "url": row["url"],
        "event_types": row["event_types"],
        "description": row["description"],
        "enabled": row["enabled"],
        "disabled_reason": row["disabled_reason"],
        "secret_fingerprint": row["secret_fingerprint"],
        "version": row["version"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def get_webhook(conn: Conn, team_id: UUID, webhook_id: UUID) -> dict[str, Any] | None:
    """The endpoint if it is ``team_id``'s and not deleted."""
    return fetch_one(conn, SELECT_WEBHOOK, {"id": webhook_id, "team_id": team_id})


def list_webhooks(conn: Conn, team_id: UUID, *, limit: int, cursor: str | None) -> Page:
    """Newest first; raises InvalidCursor."""
    params: dict[str, Any] = {
        "team_id": team_id,
        "before": decode_cursor(_CURSOR_KIND, cursor, int)[0] if cursor else None,
        "limit": limit + 1,
    }
    query = LIST_WEBHOOKS.format(where(_FILTERS, params, _IN_TEAM))
    return page_of(fetch_all(conn, query, params), limit, _CURSOR_KIND, "created_position")
