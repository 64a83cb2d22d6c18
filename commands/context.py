"""Who runs a command, and how the request around it is identified."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from aggregates.base import Actor, Aggregate, EventMetadata, Role

__all__ = ["CommandContext"]


@dataclass(frozen=True, slots=True)
class CommandContext:
    actor: Actor
    request_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    idempotency_key: str | None = None
    # The version the client last saw (If-Match); None: no precondition.
    expected_version: int | None = None
    # Chronik itself acts (e.g. disabling a failing webhook): no member, no key.
    system: bool = False
    # The actor's team as authentication loaded it moments ago; a command's
    # first attempt consults it instead of loading it again (a retry reloads).
    team: Aggregate | None = None

    @classmethod
    def for_system(cls, team_id: UUID, *, correlation_id: str) -> CommandContext:
        """A context for a command Chronik runs on its own, as the team's owner
        would be allowed to; its events name no actor."""
        actor = Actor(user_id=UUID(int=0), role=Role.OWNER, team_id=team_id)
        return cls(actor, correlation_id=correlation_id, system=True)

    def metadata(self, command: str) -> EventMetadata:
        return EventMetadata(
            team_id=self.actor.team_id,
            actor_user_id=None if self.system else self.actor.user_id,
            actor_key_id=None if self.system else self.actor.key_id,
            command=command,
            idempotency_key=self.idempotency_key,
            correlation_id=self.correlation_id or self.request_id,
            causation_id=self.causation_id,
            request_id=self.request_id,
        )
