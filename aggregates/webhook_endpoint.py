"""A team's webhook endpoint: where events go, which ones, and which secrets sign them.

The raw ``whsec_`` secrets live outside the event store (the caller keeps them);
events carry only a secret's id and fingerprint, so history never holds a secret.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import Actor, Aggregate
from aggregates.errors import (
    Forbidden,
    InvalidValue,
    NotFound,
    WebhookDeleted,
    WebhookDisabled,
    require_aware,
    require_text,
)

__all__ = ["SigningSecret", "WebhookEndpoint", "normalise_event_types"]


@dataclass(frozen=True, slots=True)
class SigningSecret:
    secret_id: str
    fingerprint: str
    valid_until: datetime | None = None  # None: the current secret, valid until rotated


def normalise_event_types(event_types: Iterable[str]) -> list[str]:
    """Distinct, stripped, in the caller's order; an empty list subscribes to all."""
    seen: dict[str, None] = {}
    for event_type in event_types:
        seen.setdefault(require_text(event_type, field="event_types"), None)
    return list(seen)


class WebhookEndpoint(Aggregate):
    @classmethod
    def register(
        cls,
        actor: Actor,
        *,
        id: UUID,
        url: str,
        event_types: Iterable[str],
        description: str,
        secret_id: str,
        secret_fingerprint: str,
    ) -> WebhookEndpoint:
        """Registers an endpoint. Whether ``url`` is safe to call is the SSRF guard's
        question, asked by the command layer on the resolved address."""
        _require_manager(actor)
        return cls(
            id=id,
            team_id=actor.team_id,
            url=require_text(url, field="url"),
            event_types=normalise_event_types(event_types),
            description=description.strip(),
            secret_id=require_text(secret_id, field="secret_id"),
            secret_fingerprint=require_text(secret_fingerprint, field="secret_fingerprint"),
        )

    @event("Registered")
    def __init__(
        self,
        *,
        id: UUID,
        team_id: UUID,
        url: str,
        event_types: list[str],
        description: str,
        secret_id: str,
        secret_fingerprint: str,
    ) -> None:
        self.team_id = team_id
        self.url = url
        self.event_types = tuple(event_types)
        self.description = description
        self.secrets: tuple[SigningSecret, ...] = (SigningSecret(secret_id, secret_fingerprint),)
        self.disabled_reason: str | None = None
        self.deleted = False

    @property
    def disabled(self) -> bool:
        return self.disabled_reason is not None

    @property
    def current_secret(self) -> SigningSecret:
        return self.secrets[-1]

    def accepts(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types

    def active_secret_ids(self, now: datetime) -> list[str]:
        """Ids of the secrets that sign at ``now``, newest first: during a rotation
        receivers get a signature they can check with either secret."""
        now = require_aware(now, field="now")
        return [
            s.secret_id
            for s in reversed(self.secrets)
            if s.valid_until is None or s.valid_until > now
        ]

    def require_deliverable(self) -> None:
        """For deliveries, resends and recovery: refused unless the endpoint is live."""
        self._require_not_deleted()
        if self.disabled:
            raise WebhookDisabled(
                "webhook endpoint is disabled", webhook_id=str(self.id), reason=self.disabled_reason
            )

    def update(
        self,
        actor: Actor,
        *,
        url: str | None = None,
        event_types: Iterable[str] | None = None,
        description: str | None = None,
    ) -> None:
        self._require_manager_of_live_endpoint(actor)
        new_url = self.url if url is None else require_text(url, field="url")
        new_types = (
            self.event_types if event_types is None else tuple(normalise_event_types(event_types))
        )
        new_description = self.description if description is None else description.strip()
        if (new_url, new_types, new_description) == (self.url, self.event_types, self.description):
            return
        self._updated(url=new_url, event_types=list(new_types), description=new_description)

    def rotate_secret(
        self,
        actor: Actor,
        *,
        new_secret_id: str,
        new_fingerprint: str,
        previous_valid_until: datetime,
    ) -> None:
        """Makes a new secret current; the one it replaces keeps signing until
        ``previous_valid_until`` so receivers can switch without losing deliveries."""
        self._require_manager_of_live_endpoint(actor)
        new_secret_id = require_text(new_secret_id, field="new_secret_id")
        if any(s.secret_id == new_secret_id for s in self.secrets):
            raise InvalidValue("secret id was used before", field="new_secret_id")
        self._secret_rotated(
            new_secret_id=new_secret_id,
            new_fingerprint=require_text(new_fingerprint, field="new_fingerprint"),
            previous_secret_id=self.current_secret.secret_id,
            previous_valid_until=require_aware(previous_valid_until, field="previous_valid_until"),
        )

    def disable(self, actor: Actor, *, reason: str) -> None:
        self._require_manager_of_live_endpoint(actor)
        self.disable_automatically(reason=reason)

    def disable_automatically(self, *, reason: str) -> None:
        """For the delivery worker (no member acts), e.g. after a receiver's 410.
        Disabling a disabled endpoint records nothing: deliveries may race here."""
        self._require_not_deleted()
        reason = require_text(reason, field="reason")
        if not self.disabled:
            self._disabled(reason=reason)

    def enable(self, actor: Actor) -> None:
        self._require_manager_of_live_endpoint(actor)
        if self.disabled:
            self._enabled()

    def delete(self, actor: Actor) -> None:
        """Soft delete: history stays, every later command is refused."""
        self._require_manager_of_live_endpoint(actor)
        self._deleted()

    def _require_manager_of_live_endpoint(self, actor: Actor) -> None:
        if actor.team_id != self.team_id:
            raise NotFound("webhook endpoint not found", webhook_id=str(self.id))
        _require_manager(actor)
        self._require_not_deleted()

    def _require_not_deleted(self) -> None:
        if self.deleted:
            raise WebhookDeleted("webhook endpoint is deleted", webhook_id=str(self.id))

    @event("Updated")
    def _updated(self, url: str, event_types: list[str], description: str) -> None:
        self.url = url
        self.event_types = tuple(event_types)
        self.description = description

    @event("SecretRotated")
    def _secret_rotated(
        self,
        new_secret_id: str,
        new_fingerprint: str,
        previous_secret_id: str,
        previous_valid_until: datetime,
    ) -> None:
        ending = replace(self.current_secret, valid_until=previous_valid_until)
        self.secrets = (*self.secrets[:-1], ending, SigningSecret(new_secret_id, new_fingerprint))

    @event("Disabled")
    def _disabled(self, reason: str) -> None:
        self.disabled_reason = reason

    @event("Enabled")
    def _enabled(self) -> None:
        self.disabled_reason = None

    @event("Deleted")
    def _deleted(self) -> None:
        self.deleted = True


def _require_manager(actor: Actor) -> None:
    if not actor.is_manager:
        raise Forbidden("only owners and admins may manage webhooks", role=actor.role.value)
