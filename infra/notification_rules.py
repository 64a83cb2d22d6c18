"""Who is notified of a public event, and what they are told: pure functions of
the event's public document, the team's members and a little context.

``members`` are the team's members as the teams read model has them when the
event is handled, which the consumer makes sure is at least as of the event
(``infra.notifications.ready_up_to``). A member removed since is therefore
not among them and hears nothing; a member who joined after the event is, but
``joined_position`` tells, and they are not told of what happened before they
joined (except, of course, of being added themselves).

Private entries' events never reach these rules (the consumer drops messages
the relay marks private); entry rules still check the visibility they publish.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aggregates.notification_preferences import NotificationKind

__all__ = [
    "KIND_OF_TYPE",
    "Context",
    "EntryTitle",
    "Member",
    "Notice",
    "email_text",
    "notices_for",
]

# The public event types that notify someone, and the kind each is.
KIND_OF_TYPE: Final[Mapping[str, NotificationKind]] = {
    "entry.created": NotificationKind.ENTRY_SHARED,
    "entry.visibility_changed": NotificationKind.ENTRY_SHARED,
    "team.member_added": NotificationKind.MEMBER_ADDED,
    "team.member_role_changed": NotificationKind.ROLE_CHANGED,
    "team.quota_threshold_reached": NotificationKind.QUOTA_THRESHOLD,
    "team.quota_exhausted": NotificationKind.QUOTA_EXHAUSTED,
    "webhook.disabled": NotificationKind.WEBHOOK_DISABLED,
    "prompt.issued": NotificationKind.PROMPT_ISSUED,
}
_MANAGERS: Final = frozenset({"owner", "admin"})
# Auditors read but never write entries: a prompt to write is not for them.
_WRITERS: Final = frozenset({"owner", "admin", "member"})
_EXCERPT: Final = 200


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    email: str
    display_name: str
    role: str
    joined_position: int


@dataclass(frozen=True, slots=True)
class EntryTitle:
    """An entry's title as the entries read model has it when the event is
    handled, with the visibility and position of that row: the model may be
    ahead of the event (the entry made private again and retitled since) or
    behind it."""

    title: str
    visibility: str
    position: int

    def as_of(self, position: int) -> str | None:
        """The title, if the team could see it as of the event at ``position``:
        the row is team-visible and no later than the event. Otherwise None
        (a title written while the entry was private must not reach the team)."""
        return self.title if self.visibility == "team" and self.position <= position else None


@dataclass(frozen=True, slots=True)
class Context:
    """What the document does not say but the text should: looked up by the
    consumer, each optional (the text does without)."""

    team_name: str | None = None
    entry_titles: Mapping[str, EntryTitle] = field(default_factory=dict)
    webhook_urls: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification for one member."""

    user_id: str
    kind: NotificationKind
    title: str
    body: str
    data: dict[str, Any]


def notices_for(
    doc: Mapping[str, Any], members: Sequence[Member], context: Context | None = None
) -> list[Notice]:
    """The notifications ``doc`` makes, one per recipient, in members' order."""
    rule = _RULES.get(str(doc.get("type")))
    if rule is None:
        return []
    return rule(doc, members, context or Context())


def email_text(notice: Notice, member: Member, team_name: str | None) -> tuple[str, str]:
    """Subject and plain-text body of the email for ``notice``."""
    where = f"[{team_name}] " if team_name else "[Chronik] "
    body = (
        f"Hello {member.display_name},\n\n{notice.body}\n\n"
        "You can change which notifications you get by email in your notification "
        "preferences.\n"
    )
    return where + notice.title, body


# -- the rules -----------------------------------------------------------------------

Rule = Callable[[Mapping[str, Any], Sequence[Member], Context], list[Notice]]


def _base(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "event_id": doc["id"],
        "event_type": doc["type"],
        "aggregate_id": doc.get("aggregate_id"),
        "occurred_at": doc.get("occurred_at"),
    }


def _actor_id(doc: Mapping[str, Any]) -> str | None:
    actor = doc.get("actor")
    return actor.get("user_id") if isinstance(actor, Mapping) else None


def _known_then(members: Sequence[Member], doc: Mapping[str, Any]) -> list[Member]:
    """Members who had joined by the event (and are members still)."""
    position = int(doc["position"])
    return [m for m in members if m.joined_position <= position]


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 1] + "…"


def _name_of(members: Sequence[Member], user_id: str | None) -> str:
    found = next((m for m in members if m.user_id == user_id), None)
    return found.display_name if found is not None else "A member"


def _entry_shared(doc: Mapping[str, Any], members: Sequence[Member], ctx: Context) -> list[Notice]:
    data = doc.get("data") or {}
    if data.get("visibility") != "team":
        return []
    entry_id = str(doc.get("aggregate_id"))
    known = ctx.entry_titles.get(entry_id)
    # The event does not say the title of an entry made team-visible: the read
    # model's, only if the team could see it then (see EntryTitle.as_of).
    read_title = known.as_of(int(doc["position"])) if known is not None else None
    if doc["type"] == "entry.created":
        author = data.get("author_id")
        title = data.get("title") or read_title
    else:  # made team-visible: only its author may do that (private entries are theirs)
        author = _actor_id(doc)
        title = read_title
    who = _name_of(members, author)
    heading = f"{who} shared “{title}”" if title else f"{who} shared an entry"
    body = heading + " with the team."
    if doc["type"] == "entry.created" and data.get("body"):
        body += "\n\n" + _excerpt(str(data["body"]))
    bits = {**_base(doc), "entry_id": entry_id, "author_id": author, "title": title}
    return [
        Notice(m.user_id, NotificationKind.ENTRY_SHARED, heading, body, bits)
        for m in _known_then(members, doc)
        if m.user_id != author
    ]


def _member_added(doc: Mapping[str, Any], members: Sequence[Member], ctx: Context) -> list[Notice]:
    data = doc.get("data") or {}
    user_id = data.get("user_id")
    # Added by this very event, so joined_position is this event's (or a later
    # re-adding's: then that later addition tells them).
    member = next((m for m in members if m.user_id == user_id), None)
    if member is None or member.joined_position != int(doc["position"]):
        return []
    team = f"the team {ctx.team_name}" if ctx.team_name else "a team"
    role = data.get("role", member.role)
    title = f"You were added to {team}"
    body = f"You were added to {team} as {_article(role)} {role}."
    bits = {**_base(doc), "user_id": user_id, "role": role}
    return [Notice(member.user_id, NotificationKind.MEMBER_ADDED, title, body, bits)]


def _role_changed(doc: Mapping[str, Any], members: Sequence[Member], ctx: Context) -> list[Notice]:
    data = doc.get("data") or {}
    user_id = data.get("user_id")
    member = next((m for m in _known_then(members, doc) if m.user_id == user_id), None)
    if member is None:
        return []
    role = str(data.get("role"))
    title = f"Your role is now {role}"
    body = f"Your role in {ctx.team_name or 'the team'} was changed to {role}."
    bits = {**_base(doc), "user_id": user_id, "role": role}
    return [Notice(member.user_id, NotificationKind.ROLE_CHANGED, title, body, bits)]


def _quota(doc: Mapping[str, Any], members: Sequence[Member], ctx: Context) -> list[Notice]:
    data = doc.get("data") or {}
    used, limit, month = data.get("used"), data.get("limit"), data.get("month")
    if doc["type"] == "team.quota_exhausted":
        kind = NotificationKind.QUOTA_EXHAUSTED
        title = f"The entry quota for {month} is used up"
        body = (
            f"The team has written {used} of its {limit} entries for {month}. "
            "No more entries can be written this month unless the plan changes."
        )
    else:
        kind = NotificationKind.QUOTA_THRESHOLD
        percent = data.get("threshold_percent")
        title = f"{percent}% of the entry quota for {month} is used"
        body = f"The team has written {used} of its {limit} entries for {month}."
    bits = {**_base(doc), "used": used, "limit": limit, "month": month}
    if "threshold_percent" in data:
        bits["threshold_percent"] = data["threshold_percent"]
    return [
        Notice(m.user_id, kind, title, body, bits)
        for m in _known_then(members, doc)
        if m.role in _MANAGERS
    ]


def _webhook_disabled(
    doc: Mapping[str, Any], members: Sequence[Member], ctx: Context
) -> list[Notice]:
    data = doc.get("data") or {}
    endpoint_id = str(doc.get("aggregate_id"))
    url = ctx.webhook_urls.get(endpoint_id)
    reason = data.get("reason") or "no reason given"
    title = "A webhook endpoint was disabled"
    body = f"The webhook endpoint {url or endpoint_id} was disabled: {reason}."
    bits = {**_base(doc), "webhook_id": endpoint_id, "url": url, "reason": data.get("reason")}
    return [
        Notice(m.user_id, NotificationKind.WEBHOOK_DISABLED, title, body, bits)
        for m in _known_then(members, doc)
        if m.role in _MANAGERS
    ]


def _prompt_issued(doc: Mapping[str, Any], members: Sequence[Member], ctx: Context) -> list[Notice]:
    data = doc.get("data") or {}
    text = data.get("text")
    title = "A new writing prompt"
    body = f"Today's prompt: {_excerpt(str(text))}" if text else "A new writing prompt is out."
    bits = {**_base(doc), "prompt_id": str(doc.get("aggregate_id")), "text": text}
    for extra in ("due_at", "issued_for", "scheduled_for"):
        if extra in data:
            bits[extra] = data[extra]
    return [
        Notice(m.user_id, NotificationKind.PROMPT_ISSUED, title, body, bits)
        for m in _known_then(members, doc)
        if m.role in _WRITERS
    ]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


_RULES: Final[Mapping[str, Rule]] = {
    "entry.created": _entry_shared,
    "entry.visibility_changed": _entry_shared,
    "team.member_added": _member_added,
    "team.member_role_changed": _role_changed,
    "team.quota_threshold_reached": _quota,
    "team.quota_exhausted": _quota,
    "webhook.disabled": _webhook_disabled,
    "prompt.issued": _prompt_issued,
}
