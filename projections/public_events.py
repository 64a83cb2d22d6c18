"""The public event catalog: the stable, versioned form of the internal events.

Internal event classes may change; integrations rely on this form instead.
The same document feeds ``/v1/teams/{t}/events``, NATS subjects and webhook
bodies, so it is built here, once, by a pure function.

``data`` is an allow-list per type, not the event's fields minus a deny-list:
a field added to an internal event (a secret, say) never reaches clients
until someone adds it here on purpose, and the unit tests make that choice
explicit by failing until every field is either published or withheld.

Schema version 1. Changes are additive (new types, new ``data`` keys); the
documents are stored by the event feed projection, so any change here must
bump ``EventFeedProjection.version`` for stored documents to be rebuilt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Final
from uuid import UUID

from pydantic import BaseModel

from aggregates.base import Aggregate
from aggregates.journal_entry import JournalEntry
from aggregates.prompt import Prompt
from aggregates.quota import MonthlyQuota
from aggregates.team import Team
from aggregates.webhook_endpoint import WebhookEndpoint
from projections.base import Fact, topic_of
from projections.reading import iso

__all__ = [
    "ENTRY_TOPICS",
    "PUBLIC_TOPICS",
    "PUBLIC_TYPES",
    "SCHEMA_VERSION",
    "PublicType",
    "UnknownTeam",
    "event_id",
    "json_ready",
    "own_fields",
    "public_event",
    "public_type_of",
    "team_of",
]

SCHEMA_VERSION: Final = 1


class UnknownTeam(ValueError):
    """Neither the metadata nor the event names a team: the event cannot be
    filed under any team's feed, so the projection must stop rather than guess."""


@dataclass(frozen=True, slots=True)
class PublicType:
    name: str
    # The event's own fields published in ``data``, in this order.
    fields: tuple[str, ...]
    # Fields deliberately left out (secrets, secret ids, what the envelope has).
    withheld: frozenset[str] = frozenset()
    # Whose command caused it is not told (``actor`` is null): see the catalog.
    anonymous: bool = False


# Created events carry team_id; the envelope has it, so data does not repeat it.
_TEAM: Final = frozenset({"team_id"})


def _of(
    aggregate: type[Aggregate],
    event: str,
    name: str,
    *fields: str,
    withheld: frozenset[str] = frozenset(),
    anonymous: bool = False,
) -> tuple[str, PublicType]:
    return topic_of(aggregate, event), PublicType(name, fields, withheld, anonymous)


_CATALOG: Final[Mapping[str, PublicType]] = dict(
    [
        _of(JournalEntry, "Created", "entry.created",
            "author_id", "title", "body", "tags", "visibility", "prompt_id", withheld=_TEAM),
        _of(JournalEntry, "Edited", "entry.edited", "title", "body", "tags"),
        _of(JournalEntry, "Deleted", "entry.deleted", "deleted_at"),
        _of(JournalEntry, "Restored", "entry.restored"),
        _of(JournalEntry, "VisibilityChanged", "entry.visibility_changed", "visibility"),
        _of(Team, "Created", "team.created",
            "name", "plan", "owner_user_id", "owner_email", "owner_display_name"),
        _of(Team, "Renamed", "team.renamed", "name"),
        _of(Team, "PlanChanged", "team.plan_changed", "plan"),
        _of(Team, "MemberAdded", "team.member_added", "user_id", "email", "display_name", "role"),
        _of(Team, "MemberRoleChanged", "team.member_role_changed", "user_id", "role"),
        _of(Team, "MemberRemoved", "team.member_removed", "user_id"),
        # The scrypt hash of a key's secret is never published, nor is anything of it.
        _of(Team, "ApiKeyIssued", "team.api_key_issued", "key_id", "user_id", "name",
            withheld=frozenset({"secret_hash"})),
        _of(Team, "ApiKeyRevoked", "team.api_key_revoked", "key_id", "user_id", "reason"),
        _of(Prompt, "Created", "prompt.created", "text", "schedule", withheld=_TEAM),
        _of(Prompt, "Edited", "prompt.edited", "text", "schedule"),
        _of(Prompt, "Archived", "prompt.archived"),
        _of(Prompt, "Issued", "prompt.issued", "due_at", "text"),
        # Secret ids name where the signing secrets are kept: internal, never
        # published. Fingerprints only tell secrets apart, so they are.
        _of(WebhookEndpoint, "Registered", "webhook.registered",
            "url", "event_types", "description", "secret_fingerprint",
            withheld=_TEAM | {"secret_id"}),
        _of(WebhookEndpoint, "Updated", "webhook.updated", "url", "event_types", "description"),
        _of(WebhookEndpoint, "SecretRotated", "webhook.secret_rotated",
            "new_fingerprint", "previous_valid_until",
            withheld=frozenset({"new_secret_id", "previous_secret_id"})),
        _of(WebhookEndpoint, "Disabled", "webhook.disabled", "reason"),
        _of(WebhookEndpoint, "Enabled", "webhook.enabled"),
        _of(WebhookEndpoint, "Deleted", "webhook.deleted"),
        # MonthlyQuota.Started and .EntryCounted are bookkeeping: not public.
        # month: added (additively) with ThresholdReached v2; v1 events are upcast.
        # The team's usage crosses the threshold, not a member: naming whose entry
        # did could tell the team about an entry that is its author's alone.
        _of(MonthlyQuota, "ThresholdReached", "team.quota_threshold_reached",
            "threshold_percent", "used", "limit", "month", anonymous=True),
        _of(MonthlyQuota, "Exhausted", "team.quota_exhausted",
            "used", "limit", "month", anonymous=True),
    ]
)  # fmt: skip

PUBLIC_TOPICS: Final = frozenset(_CATALOG)
PUBLIC_TYPES: Final = tuple(t.name for t in _CATALOG.values())
ENTRY_TOPICS: Final = frozenset(t for t in _CATALOG if t.startswith(topic_of(JournalEntry, "")))
_TEAM_TOPICS: Final = frozenset(t for t in _CATALOG if t.startswith(topic_of(Team, "")))
# Fields every event has; the envelope carries them (or they are internal).
_ENVELOPE_FIELDS: Final = frozenset(
    {"originator_id", "originator_version", "originator_topic", "timestamp", "metadata"}
)


def public_type_of(topic: str) -> PublicType | None:
    return _CATALOG.get(topic)


def own_fields(fact: Fact) -> frozenset[str]:
    """The event's fields beyond those every event has (for the catalog's tests)."""
    return frozenset(fact.data) - _ENVELOPE_FIELDS


def event_id(position: int) -> str:
    """Stable for ever: positions never change, and webhook ids reuse it."""
    return f"evt_{position}"


def public_event(fact: Fact) -> dict[str, Any] | None:
    """The public document of ``fact``; None for internal-only events.

    Raises UnknownTeam when no team can be named for the event.
    """
    public = _CATALOG.get(fact.topic)
    if public is None:
        return None
    data = fact.data
    return {
        "id": event_id(fact.position),
        "type": public.name,
        "position": fact.position,
        "team_id": str(team_of(fact)),
        "aggregate_id": str(fact.aggregate_id),
        "aggregate_version": fact.version,
        "occurred_at": iso(fact.event.timestamp),
        "actor": None if public.anonymous else _actor(fact),
        "data": {name: json_ready(data[name]) for name in public.fields},
    }


def team_of(fact: Fact) -> UUID:
    """The team whose feed ``fact`` belongs to: the metadata's, else the event's
    own team_id, else (for Team events) the team itself."""
    metadata = fact.event.metadata
    if metadata is not None and metadata.team_id is not None:
        return metadata.team_id
    own = fact.data.get("team_id")
    if isinstance(own, UUID):
        return own
    if fact.topic in _TEAM_TOPICS:
        return UUID(str(fact.aggregate_id))
    raise UnknownTeam(f"no team for {fact.topic} at position {fact.position}")


def _actor(fact: Fact) -> dict[str, str | None] | None:
    metadata = fact.event.metadata
    if metadata is None or (metadata.actor_user_id is None and metadata.actor_key_id is None):
        return None
    user_id = metadata.actor_user_id
    return {"user_id": None if user_id is None else str(user_id), "key_id": metadata.actor_key_id}


def json_ready(value: Any) -> Any:
    """What orjson and jsonb both store the same way, whatever the field's type
    (the audit trail shows event fields and aggregate states with it too)."""
    # Unwrapped first: a StrEnum is a str, but its value is what is meant.
    if isinstance(value, Enum):
        value = value.value
    elif isinstance(value, BaseModel):
        value = value.model_dump()
    match value:
        case None | bool() | int() | float() | str():
            return value
        case UUID() | Decimal():
            return str(value)
        case datetime():
            return iso(value)
        case Mapping():
            return {str(k): json_ready(v) for k, v in value.items()}
        case list() | tuple() | set() | frozenset():
            return [json_ready(v) for v in value]
    raise TypeError(f"cannot give a {type(value).__name__} as JSON")
