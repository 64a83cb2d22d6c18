"""One member's notification preferences: per kind of notification, whether it
goes to the in-app inbox, whether it is emailed, and whether the email waits
for the daily digest.

One aggregate per (team, member), under an id anyone can compute, so the first
change of two at once conflicts and the command layer retries it. A kind never
set has the defaults (inbox on, email on, digest off); each change records the
kind's three flags as they now stand, so a reader needs only a kind's latest
event.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from aggregates.base import Actor, Aggregate
from aggregates.errors import Forbidden, InvalidValue

__all__ = [
    "DEFAULT_CHANNELS",
    "Channels",
    "EmailMode",
    "NotificationKind",
    "NotificationPreferences",
    "parse_kind",
]

_NAMESPACE: Final = uuid5(NAMESPACE_URL, "urn:chronik:notification-preferences")

EmailMode = Literal["off", "immediate", "digest"]


class NotificationKind(StrEnum):
    ENTRY_SHARED = "entry_shared"
    MEMBER_ADDED = "member_added"
    ROLE_CHANGED = "role_changed"
    QUOTA_THRESHOLD = "quota_threshold"
    QUOTA_EXHAUSTED = "quota_exhausted"
    WEBHOOK_DISABLED = "webhook_disabled"
    PROMPT_ISSUED = "prompt_issued"


def parse_kind(value: str) -> NotificationKind:
    try:
        return NotificationKind(value)
    except ValueError:
        raise InvalidValue(
            "unknown notification kind",
            field="kind",
            allowed=[k.value for k in NotificationKind],
        ) from None


@dataclass(frozen=True, slots=True)
class Channels:
    """A kind's flags. ``digest`` on: no email one by one, the kind goes into
    the member's daily digest email instead (whatever ``email`` says); off:
    ``email`` says whether each notification is emailed at once."""

    inbox: bool
    email: bool
    digest: bool

    @property
    def email_mode(self) -> EmailMode:
        if self.digest:
            return "digest"
        return "immediate" if self.email else "off"


DEFAULT_CHANNELS: Final = Channels(inbox=True, email=True, digest=False)


class NotificationPreferences(Aggregate):
    @staticmethod
    def id_for(team_id: UUID, user_id: UUID) -> UUID:
        return uuid5(_NAMESPACE, f"{team_id}/{user_id}")

    @classmethod
    def start(cls, actor: Actor) -> NotificationPreferences:
        """The preferences of the member ``actor`` is (nobody sets another's)."""
        return cls(
            id=cls.id_for(actor.team_id, actor.user_id),
            team_id=actor.team_id,
            user_id=actor.user_id,
        )

    @event("Created")
    def __init__(self, *, id: UUID, team_id: UUID, user_id: UUID) -> None:
        self.team_id = team_id
        self.user_id = user_id
        self.kinds: dict[str, Channels] = {}

    def channels(self, kind: NotificationKind) -> Channels:
        return self.kinds.get(kind.value, DEFAULT_CHANNELS)

    def change(
        self,
        actor: Actor,
        kind: NotificationKind,
        *,
        inbox: bool | None = None,
        email: bool | None = None,
        digest: bool | None = None,
    ) -> None:
        """Sets the given flags of ``kind``; a change that changes nothing records nothing."""
        if actor.team_id != self.team_id or actor.user_id != self.user_id:
            raise Forbidden("members set their own notification preferences only")
        kind = parse_kind(kind)
        current = self.channels(kind)
        wanted = Channels(
            inbox=current.inbox if inbox is None else inbox,
            email=current.email if email is None else email,
            digest=current.digest if digest is None else digest,
        )
        if wanted != current:
            self._kind_changed(
                kind=kind.value, inbox=wanted.inbox, email=wanted.email, digest=wanted.digest
            )

    @event("KindChanged")
    def _kind_changed(self, kind: str, inbox: bool, email: bool, digest: bool) -> None:
        self.kinds = {**self.kinds, kind: Channels(inbox=inbox, email=email, digest=digest)}
