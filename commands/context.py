"""Who runs a command, and how the request around it is identified."""

from __future__ import annotations

from dataclasses import dataclass

from aggregates.base import Actor, EventMetadata

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

    def metadata(self, command: str) -> EventMetadata:
        return EventMetadata(
            team_id=self.actor.team_id,
            actor_user_id=self.actor.user_id,
            actor_key_id=self.actor.key_id,
            command=command,
            idempotency_key=self.idempotency_key,
            correlation_id=self.correlation_id or self.request_id,
            causation_id=self.causation_id,
            request_id=self.request_id,
        )
