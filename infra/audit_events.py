"""One stored event as the audit history gives it: the event's own fields with
who, when and through which command, minus secret material and what would
betray another member's private entry.

Unlike the public catalog (an allow-list of what integrations may rely on), an
auditor sees every field of every event, internal ones included, except those
withheld here. Every event class must be listed in ``_WITHHELD`` (the unit
tests fail until it is), so a new event with a secret in it is a decision, not
an accident; an event class missing from it anyway gives no data at all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from eventsourcing.utils import get_topic

from aggregates.base import Aggregate, DomainEvent
from aggregates.journal_entry import JournalEntry
from aggregates.prompt import Prompt
from aggregates.quota import MonthlyQuota
from aggregates.team import Team
from aggregates.webhook_endpoint import WebhookEndpoint
from infra.audit_state import AGGREGATE_TYPES
from projections.base import topic_of
from projections.public_events import json_ready, public_type_of
from projections.reading import iso

__all__ = [
    "ACTOR_WITHHELD",
    "KNOWN_TOPICS",
    "aggregate_type_of",
    "audit_type",
    "event_item",
    "withheld_of",
]

_NONE: Final = frozenset[str]()
# Secret ids name where webhook signing secrets are kept: internal, as in the public
# catalog. A key's scrypt hash is secret material. Fingerprints only tell secrets apart.
_WITHHELD: Final[Mapping[str, frozenset[str]]] = {
    topic_of(aggregate, name): withheld
    for aggregate, name, withheld in (
        (JournalEntry, "Created", _NONE),
        (JournalEntry, "Edited", _NONE),
        (JournalEntry, "VisibilityChanged", _NONE),
        (JournalEntry, "Deleted", _NONE),
        (JournalEntry, "Restored", _NONE),
        (Team, "Created", _NONE),
        (Team, "Renamed", _NONE),
        (Team, "PlanChanged", _NONE),
        (Team, "MemberAdded", _NONE),
        (Team, "MemberRoleChanged", _NONE),
        (Team, "MemberRemoved", _NONE),
        (Team, "ApiKeyIssued", frozenset({"secret_hash"})),
        (Team, "ApiKeyRevoked", _NONE),
        (Prompt, "Created", _NONE),
        (Prompt, "Edited", _NONE),
        (Prompt, "Archived", _NONE),
        (Prompt, "Issued", _NONE),
        (WebhookEndpoint, "Registered", frozenset({"secret_id"})),
        (WebhookEndpoint, "Updated", _NONE),
        (WebhookEndpoint, "SecretRotated", frozenset({"new_secret_id", "previous_secret_id"})),
        (WebhookEndpoint, "Disabled", _NONE),
        (WebhookEndpoint, "Enabled", _NONE),
        (WebhookEndpoint, "Deleted", _NONE),
        (MonthlyQuota, "Started", _NONE),
        # Which entry was counted: a private entry's id is its author's alone.
        (MonthlyQuota, "EntryCounted", frozenset({"entry_id"})),
        (MonthlyQuota, "ThresholdReached", _NONE),
        (MonthlyQuota, "Exhausted", _NONE),
    )
}
KNOWN_TOPICS: Final = frozenset(_WITHHELD)
# Events whose actor and metadata are withheld too (metadata keeps the team only):
# a quota is started and counts an entry in the command that writes the entry, so
# who, through which command and request would tell that this member wrote an
# entry then, though the entry may be private. Position, version, type, time and
# data (minus the entry's id) stay: somebody's entry counted at that time.
ACTOR_WITHHELD: Final = frozenset(
    {topic_of(MonthlyQuota, "Started"), topic_of(MonthlyQuota, "EntryCounted")}
)
# Fields every event has; the item's envelope carries them (or they are internal).
_ENVELOPE: Final = frozenset(
    {"originator_id", "originator_version", "originator_topic", "timestamp", "metadata"}
)
_AGGREGATES_BY_TOPIC: Final = {get_topic(cls): cls for cls in AGGREGATE_TYPES}
_CAMEL: Final = re.compile(r"(?<!^)(?=[A-Z])")


def withheld_of(topic: str) -> frozenset[str] | None:
    """The fields of ``topic`` never shown; None for an event class nobody reviewed."""
    return _WITHHELD.get(topic)


def aggregate_type_of(topic: str) -> type[Aggregate] | None:
    """The aggregate class whose event ``topic`` is (``module:Class.Event``)."""
    return _AGGREGATES_BY_TOPIC.get(topic.rpartition(".")[0])


def audit_type(topic: str) -> str:
    """The public type name where the catalog has one (``entry.edited``), else one
    derived from the classes (``quota.entry_counted``): stable while they are."""
    public = public_type_of(topic)
    if public is not None:
        return public.name
    owner, _, name = topic.rpartition(".")
    cls = _AGGREGATES_BY_TOPIC.get(owner)
    prefix = AGGREGATE_TYPES[cls] if cls is not None else owner.rpartition(":")[2].lower()
    return f"{prefix}.{_CAMEL.sub('_', name).lower()}"


def _actor(event: DomainEvent) -> dict[str, str | None] | None:
    # The same form as the public documents' actor: None when Chronik itself acted.
    metadata = event.metadata
    if metadata is None or (metadata.actor_user_id is None and metadata.actor_key_id is None):
        return None
    user_id = metadata.actor_user_id
    return {"user_id": None if user_id is None else str(user_id), "key_id": metadata.actor_key_id}


def event_item(position: int, topic: str, event: DomainEvent) -> dict[str, Any]:
    """The audit form of one stored event."""
    withheld = withheld_of(topic)
    data = None
    if withheld is not None:
        data = {
            name: json_ready(value)
            for name, value in event.__dict__.items()
            if name not in _ENVELOPE and name not in withheld
        }
    metadata = event.metadata
    actor = _actor(event)
    shown: dict[str, Any] | None = None
    if metadata is not None:
        shown = json_ready(metadata.model_dump())
        if topic in ACTOR_WITHHELD:
            actor, shown = None, {"team_id": shown["team_id"]}
    return {
        "position": position,
        "aggregate_id": str(event.originator_id),
        "aggregate_version": event.originator_version,
        "type": audit_type(topic),
        "occurred_at": iso(event.timestamp),
        "actor": actor,
        "metadata": shown,
        "data": data,
    }
