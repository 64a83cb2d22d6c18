"""A member's in-app inbox: their notifications, newest first, and marking
them read (named SQL; the notification consumer writes the rows, see
``infra.notifications``).

Every query is scoped to (team, member): another member's notification, or
another team's, is indistinguishable from one that does not exist.
Notifications kept only for email or the digest (the member's inbox is off
for their kind) are not in the inbox.
"""

from __future__ import annotations

from typing import Any, Final
from uuid import UUID

from psycopg import sql

from infra.notifications import DELIVERY_KEY
from projections.pagination import Page, decode_cursor, page_of
from projections.reading import Conn, fetch_all, fetch_one, iso, iso_or_none, where

__all__ = ["get_notification", "list_inbox", "mark_all_read", "mark_read", "notification_view"]

_CURSOR_KIND: Final = "notifications"
# Every query is the member's own, in the inbox only: a notification stored for
# email or the digest alone says so in data._delivery.inbox (infra.notifications).
LIST: Final = sql.SQL(
    "SELECT id, kind, position, event_id, title, body, data, created_at, read_at "
    "FROM notifications WHERE {} ORDER BY id DESC LIMIT %(limit)s"
)
_MINE: Final = (
    "team_id = %(team_id)s AND user_id = %(user_id)s"
    " AND coalesce((data -> '_delivery' ->> 'inbox')::boolean, true)"
)
_FILTERS: Final = {"before": "id < %(before)s", "unread": "read_at IS NULL"}
UNREAD_COUNT: Final = """
SELECT count(*) AS n FROM notifications
WHERE team_id = %(team_id)s AND user_id = %(user_id)s
    AND coalesce((data -> '_delivery' ->> 'inbox')::boolean, true) AND read_at IS NULL
"""
SELECT_ONE: Final = """
SELECT id, kind, position, event_id, title, body, data, created_at, read_at
FROM notifications
WHERE team_id = %(team_id)s AND user_id = %(user_id)s
    AND coalesce((data -> '_delivery' ->> 'inbox')::boolean, true) AND id = %(id)s
"""
# Marking read again keeps the first time it was read.
MARK_READ: Final = """
UPDATE notifications SET read_at = coalesce(read_at, now())
WHERE team_id = %(team_id)s AND user_id = %(user_id)s
    AND coalesce((data -> '_delivery' ->> 'inbox')::boolean, true) AND id = %(id)s
RETURNING id, kind, position, event_id, title, body, data, created_at, read_at
"""
MARK_ALL_READ: Final = """
UPDATE notifications SET read_at = now()
WHERE team_id = %(team_id)s AND user_id = %(user_id)s
    AND coalesce((data -> '_delivery' ->> 'inbox')::boolean, true) AND read_at IS NULL
"""


def notification_view(row: dict[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in row["data"].items() if k != DELIVERY_KEY}
    return {
        "id": str(row["id"]),
        "kind": row["kind"],
        "title": row["title"],
        "body": row["body"],
        "data": data,
        "event_id": row["event_id"],
        "position": row["position"],
        "created_at": iso(row["created_at"]),
        "read": row["read_at"] is not None,
        "read_at": iso_or_none(row["read_at"]),
    }


def list_inbox(
    conn: Conn, team_id: UUID, user_id: UUID, *, unread: bool, limit: int, cursor: str | None
) -> tuple[Page, int]:
    """A page of the member's inbox (only unread ones with ``unread``) and how
    many are unread in all; raises InvalidCursor."""
    params: dict[str, Any] = {
        "team_id": team_id,
        "user_id": user_id,
        "before": decode_cursor(_CURSOR_KIND, cursor, int)[0] if cursor else None,
        "unread": True if unread else None,
        "limit": limit + 1,
    }
    rows = fetch_all(conn, LIST.format(where(_FILTERS, params, _MINE)), params)
    count = fetch_one(conn, UNREAD_COUNT, params)
    return page_of(rows, limit, _CURSOR_KIND, "id"), 0 if count is None else int(count["n"])


def get_notification(
    conn: Conn, team_id: UUID, user_id: UUID, notification_id: int
) -> dict[str, Any] | None:
    return fetch_one(
        conn, SELECT_ONE, {"team_id": team_id, "user_id": user_id, "id": notification_id}
    )


def mark_read(
    conn: Conn, team_id: UUID, user_id: UUID, notification_id: int
) -> dict[str, Any] | None:
    """The notification, read; None if the member has no such notification."""
    return fetch_one(
        conn, MARK_READ, {"team_id": team_id, "user_id": user_id, "id": notification_id}
    )


def mark_all_read(conn: Conn, team_id: UUID, user_id: UUID) -> int:
    """Marks every unread notification of the member read; how many there were."""
    with conn.cursor() as cur:
        cur.execute(MARK_ALL_READ, {"team_id": team_id, "user_id": user_id})
        return cur.rowcount
