"""Notifications as the notification consumer writes them (named SQL; the
inbox API's reads and marks are in ``infra.inbox``).

For a batch of public documents: wait until the read models the rules read
(members, preferences) are as of each event, look up the members and a little
context, apply the pure rules (``infra.notification_rules``) and the members'
preferences, then insert, in one transaction, the notifications
(``ON CONFLICT (position, user_id) DO NOTHING``) and, for those actually
inserted whose member wants them emailed at once, their ``email_outbox`` rows.
A redelivered message therefore creates nothing twice, not even an email.

A notification is stored when any channel wants it: the inbox, an immediate
email (the outbox row points at it) or the daily digest (which reads
``notifications``). One stored for email or digest only, with the member's
inbox off for its kind, is hidden from the inbox: ``data._delivery.inbox`` is
false (``HIDDEN``), and the inbox reads leave it out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

import orjson
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from aggregates.journal_entry import JournalEntry
from aggregates.notification_preferences import Channels
from aggregates.team import Team
from aggregates.webhook_endpoint import WebhookEndpoint
from infra.email_outbox import NOTIFY_DUE
from infra.notification_rules import (
    KIND_OF_TYPE,
    Context,
    EntryTitle,
    Member,
    Notice,
    email_text,
    notices_for,
)
from projections.base import topic_of
from projections.notification_preferences import (
    SELECT_FOR_MEMBERS,
    NotificationPreferencesProjection,
    channels_of,
)

__all__ = [
    "DELIVERY_KEY",
    "Recorded",
    "Row",
    "plan_rows",
    "ready_up_to",
    "record_notifications",
]

Conn = AsyncConnection[Any]

# The key of ``notifications.data`` that says how the notification was
# delivered: {"inbox": bool, "email": "off" | "immediate" | "digest"}. Not
# part of what the inbox API shows.
DELIVERY_KEY: Final = "_delivery"

# The read models the rules depend on, and the events that change what they
# would answer: a message waits only across such a change. The entries and
# webhooks models give the text of the two events that do not carry it (an
# entry made team-visible: its title; a disabled webhook: its URL), so only
# those events wait for them.
_DEPENDENCIES: Final[Mapping[str, frozenset[str]]] = {
    "teams": frozenset(
        topic_of(Team, e) for e in ("Created", "MemberAdded", "MemberRoleChanged", "MemberRemoved")
    ),
    NotificationPreferencesProjection.name: NotificationPreferencesProjection.handled,
    "entries": frozenset({topic_of(JournalEntry, "VisibilityChanged")}),
    "webhooks": frozenset({topic_of(WebhookEndpoint, "Disabled")}),
}
ACTIVE_POSITION: Final = (
    "SELECT position FROM projection_generations WHERE projection = %(name)s AND state = 'active'"
)
FIRST_CHANGE: Final = """
SELECT min(notification_id) FROM chronik_events
WHERE notification_id > %(after)s AND notification_id <= %(upto)s AND topic = ANY (%(topics)s)
"""
SELECT_MEMBERS: Final = """
SELECT team_id, user_id, email, display_name, role, joined_position
FROM reads.team_members WHERE team_id = ANY (%(teams)s)
ORDER BY team_id, joined_position
"""
SELECT_TEAM_NAMES: Final = "SELECT id, name FROM reads.teams WHERE id = ANY (%(teams)s)"
# As the entries read model has them now: the rules use a title only if its
# row is team-visible and no later than the event (EntryTitle.as_of).
SELECT_ENTRY_TITLES: Final = """
SELECT id, title, visibility, position FROM reads.entries
WHERE id = ANY (%(ids)s) AND team_id = ANY (%(teams)s)
"""
SELECT_WEBHOOK_URLS: Final = """
SELECT id, url AS value FROM reads.webhooks WHERE id = ANY (%(ids)s) AND team_id = ANY (%(teams)s)
"""
# The emails are joined to the notifications this statement inserted, so a
# notification that existed already (a redelivery) gets no second email.
INSERT_NOTIFICATIONS: Final = """
WITH inserted AS (
    INSERT INTO notifications (team_id, user_id, kind, position, event_id, title, body, data)
    SELECT team_id, user_id, kind, position, event_id, title, body, data::jsonb
    FROM unnest(%(teams)s::uuid[], %(users)s::uuid[], %(kinds)s::text[],
        %(positions)s::bigint[], %(event_ids)s::text[], %(titles)s::text[],
        %(bodies)s::text[], %(datas)s::text[])
        AS n (team_id, user_id, kind, position, event_id, title, body, data)
    ON CONFLICT (position, user_id) DO NOTHING
    RETURNING id, team_id, user_id, position
), emailed AS (
    INSERT INTO email_outbox (team_id, user_id, notification_id, to_address, subject, body)
    SELECT i.team_id, i.user_id, i.id, e.to_address, e.subject, e.body
    FROM inserted i
    JOIN unnest(%(e_positions)s::bigint[], %(e_users)s::uuid[], %(e_to)s::text[],
        %(e_subjects)s::text[], %(e_bodies)s::text[])
        AS e (position, user_id, to_address, subject, body)
        ON e.position = i.position AND e.user_id = i.user_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted) AS notifications, (SELECT count(*) FROM emailed) AS emails
"""


@dataclass(frozen=True, slots=True)
class Row:
    """One notification to insert, with its email if it is sent at once."""

    team_id: str
    member: Member
    position: int
    event_id: str
    notice: Notice
    inbox: bool
    email_mode: str
    email: tuple[str, str] | None  # (subject, body)

    def data_json(self) -> str:
        delivery = {"inbox": self.inbox, "email": self.email_mode}
        return orjson.dumps({**self.notice.data, DELIVERY_KEY: delivery}).decode()


@dataclass(frozen=True, slots=True)
class Recorded:
    notifications: int
    emails: int


async def ready_up_to(conn: Conn, upto: int) -> int | None:
    """The last position up to ``upto`` whose events the rules can be applied
    to now: every read model they read has reached it, or no event that would
    change their answer lies between that model's position and it. None: a
    read model is not built yet."""
    ready = upto
    for name, topics in _DEPENDENCIES.items():
        cur = await conn.execute(ACTIVE_POSITION, {"name": name})
        row = await cur.fetchone()
        if row is None:
            return None
        position = int(row[0])
        if position >= upto:
            continue
        cur = await conn.execute(
            FIRST_CHANGE, {"after": position, "upto": upto, "topics": sorted(topics)}
        )
        change = await cur.fetchone()
        if change is not None and change[0] is not None:
            ready = min(ready, int(change[0]) - 1)
    return ready


def plan_rows(
    docs: Sequence[Mapping[str, Any]],
    members: Mapping[str, Sequence[Member]],
    contexts: Mapping[str, Context],
    preferences: Mapping[tuple[str, str, str], Channels],
) -> list[Row]:
    """What to insert for ``docs``, by team: the rules, then each member's
    flags for the kind (defaults where unset). One row per (event, member)."""
    rows: dict[tuple[int, str], Row] = {}
    for doc in docs:
        team_id = str(doc["team_id"])
        team_members = members.get(team_id, ())
        context = contexts.get(team_id, Context())
        by_id = {m.user_id: m for m in team_members}
        for notice in notices_for(doc, team_members, context):
            channels = preferences.get((team_id, notice.user_id, notice.kind.value))
            channels = channels if channels is not None else channels_of(None)
            mode = channels.email_mode
            if not channels.inbox and mode == "off":
                continue
            member = by_id[notice.user_id]
            email = email_text(notice, member, context.team_name) if mode == "immediate" else None
            key = (int(doc["position"]), notice.user_id)
            rows[key] = Row(
                team_id, member, key[0], str(doc["id"]), notice, channels.inbox, mode, email
            )
    return list(rows.values())


async def record_notifications(conn: Conn, docs: Sequence[Mapping[str, Any]]) -> Recorded:
    """Notifications (and immediate emails) for ``docs``, in one transaction,
    idempotently per (event, member); wakes the email senders if any email is new."""
    relevant = [d for d in docs if d.get("type") in KIND_OF_TYPE]
    if not relevant:
        return Recorded(0, 0)
    teams = sorted({UUID(str(d["team_id"])) for d in relevant})
    members, contexts = await _members_and_contexts(conn, teams, relevant)
    rows = plan_rows(relevant, members, contexts, await _preferences(conn, relevant, members))
    if not rows:
        return Recorded(0, 0)
    emailed = [r for r in rows if r.email is not None]
    params = {
        "teams": [r.team_id for r in rows],
        "users": [r.member.user_id for r in rows],
        "kinds": [r.notice.kind.value for r in rows],
        "positions": [r.position for r in rows],
        "event_ids": [r.event_id for r in rows],
        "titles": [r.notice.title for r in rows],
        "bodies": [r.notice.body for r in rows],
        "datas": [r.data_json() for r in rows],
        "e_positions": [r.position for r in emailed],
        "e_users": [r.member.user_id for r in emailed],
        "e_to": [r.member.email for r in emailed],
        "e_subjects": [r.email[0] for r in emailed if r.email is not None],
        "e_bodies": [r.email[1] for r in emailed if r.email is not None],
    }
    async with conn.transaction():
        cur = await conn.execute(INSERT_NOTIFICATIONS, params)
        counts = await cur.fetchone()
        assert counts is not None
        recorded = Recorded(int(counts[0]), int(counts[1]))
        if recorded.emails:
            await conn.execute(NOTIFY_DUE)
    return recorded


async def _members_and_contexts(
    conn: Conn, teams: list[UUID], docs: Iterable[Mapping[str, Any]]
) -> tuple[dict[str, list[Member]], dict[str, Context]]:
    members: dict[str, list[Member]] = {}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SELECT_MEMBERS, {"teams": teams})
        for row in await cur.fetchall():
            members.setdefault(str(row["team_id"]), []).append(
                Member(
                    user_id=str(row["user_id"]),
                    email=row["email"],
                    display_name=row["display_name"],
                    role=row["role"],
                    joined_position=int(row["joined_position"]),
                )
            )
        await cur.execute(SELECT_TEAM_NAMES, {"teams": teams})
        names = {str(row["id"]): row["name"] for row in await cur.fetchall()}
        docs = list(docs)
        titles = {
            id_: EntryTitle(row["title"], row["visibility"], int(row["position"]))
            for id_, row in (
                await _lookup(cur, SELECT_ENTRY_TITLES, teams, docs, "entry.visibility_changed")
            ).items()
        }
        urls = {
            id_: str(row["value"])
            for id_, row in (
                await _lookup(cur, SELECT_WEBHOOK_URLS, teams, docs, "webhook.disabled")
            ).items()
        }
    contexts = {
        str(team): Context(team_name=names.get(str(team)), entry_titles=titles, webhook_urls=urls)
        for team in teams
    }
    return members, contexts


async def _lookup(
    cur: Any, query: str, teams: list[UUID], docs: Sequence[Mapping[str, Any]], event_type: str
) -> dict[str, dict[str, Any]]:
    ids = sorted({UUID(str(d["aggregate_id"])) for d in docs if d["type"] == event_type})
    if not ids:
        return {}
    await cur.execute(query, {"ids": ids, "teams": teams})
    return {str(row["id"]): row for row in await cur.fetchall()}


async def _preferences(
    conn: Conn, docs: Sequence[Mapping[str, Any]], members: Mapping[str, Sequence[Member]]
) -> dict[tuple[str, str, str], Channels]:
    """The set flags of every (team, member, kind) the batch could notify."""
    wanted = sorted(
        {
            (str(d["team_id"]), m.user_id, KIND_OF_TYPE[d["type"]].value)
            for d in docs
            for m in members.get(str(d["team_id"]), ())
        }
    )
    if not wanted:
        return {}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            SELECT_FOR_MEMBERS,
            {
                "teams": [w[0] for w in wanted],
                "users": [w[1] for w in wanted],
                "kinds": [w[2] for w in wanted],
            },
        )
        return {
            (str(r["team_id"]), str(r["user_id"]), r["kind"]): channels_of(r)
            for r in await cur.fetchall()
        }
