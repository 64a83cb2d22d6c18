"""The documented JSON form of each aggregate's state, for the audit routes
(presentation, not domain: it lives beside the audit reads, not the aggregates).

Pure: an aggregate (rebuilt from its events by the event store) in, a JSON-ready
dict out. Every form is an allow-list of what an auditor may read: a field added
to an aggregate reaches no one until it is added here. Secret material never
does: API keys appear without their scrypt hash, webhook signing secrets by
fingerprint only (their secret ids name where the secrets are kept).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from aggregates.base import Aggregate
from aggregates.journal_entry import JournalEntry
from aggregates.prompt import Prompt
from aggregates.quota import MonthlyQuota
from aggregates.team import Team
from aggregates.webhook_endpoint import WebhookEndpoint
from projections.public_events import json_ready

__all__ = [
    "AGGREGATE_TYPES",
    "state_of",
]

# The public name of each aggregate type, as the audit routes give it.
AGGREGATE_TYPES: Final[Mapping[type[Aggregate], str]] = {
    JournalEntry: "entry",
    Team: "team",
    Prompt: "prompt",
    WebhookEndpoint: "webhook",
    MonthlyQuota: "quota",
}


def _entry(entry: JournalEntry) -> dict[str, Any]:
    return {
        "team_id": entry.team_id,
        "author_id": entry.author_id,
        "title": entry.title,
        "body": entry.body,
        "tags": list(entry.tags),
        "visibility": entry.visibility,
        "prompt_id": entry.prompt_id,
        "deleted_at": entry.deleted_at,
    }


def _team(team: Team) -> dict[str, Any]:
    return {
        "name": team.name,
        "plan": team.plan,
        "members": [
            {"user_id": m.user_id, "email": m.email, "display_name": m.display_name, "role": m.role}
            for m in team.members
        ],
        # Never secret_hash: not even a hash of a key's secret leaves the store.
        "api_keys": [
            {"key_id": k.key_id, "user_id": k.user_id, "name": k.name, "revoked": k.revoked}
            for k in team.keys
        ],
    }


def _prompt(prompt: Prompt) -> dict[str, Any]:
    return {
        "team_id": prompt.team_id,
        "text": prompt.text,
        "schedule": prompt.schedule,
        "archived": prompt.archived,
        "last_issued_at": prompt.last_issued_at,
    }


def _webhook(webhook: WebhookEndpoint) -> dict[str, Any]:
    return {
        "team_id": webhook.team_id,
        "url": webhook.url,
        "event_types": list(webhook.event_types),
        "description": webhook.description,
        # Oldest first, the current one last; no secret ids (see the module's doc).
        "secrets": [
            {"fingerprint": s.fingerprint, "valid_until": s.valid_until} for s in webhook.secrets
        ],
        "disabled": webhook.disabled,
        "disabled_reason": webhook.disabled_reason,
        "deleted": webhook.deleted,
    }


def _quota(quota: MonthlyQuota) -> dict[str, Any]:
    return {
        "team_id": quota.team_id,
        "month": quota.month,
        "used": quota.used,
        "threshold_reached": quota.threshold_reached,
    }


_FORMS: Final[Mapping[type[Aggregate], Callable[[Any], dict[str, Any]]]] = {
    JournalEntry: _entry,
    Team: _team,
    Prompt: _prompt,
    WebhookEndpoint: _webhook,
    MonthlyQuota: _quota,
}


def state_of(aggregate: Aggregate) -> dict[str, Any]:
    """The JSON form of ``aggregate``: its id and creation time, then its type's fields.

    Raises TypeError for an aggregate type that has no documented form.
    """
    form = _FORMS.get(type(aggregate))
    if form is None:
        raise TypeError(f"no audit form for {type(aggregate).__name__}")
    state = {"id": aggregate.id, "created_at": aggregate.created_on, **form(aggregate)}
    return {key: json_ready(value) for key, value in state.items()}
