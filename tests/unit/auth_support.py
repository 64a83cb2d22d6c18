"""A team with its owner's key, and a store holding just that team, for the
authenticator's unit tests (pure logic: no database)."""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

from aggregates.base import Actor, Role
from aggregates.team import Team
from commands.auth import new_key


def team_with_owner_key() -> tuple[Team, Actor, str]:
    """A team, its owner, and the id of a key issued to the owner."""
    owner = uuid.uuid4()
    team = Team.create(
        id=uuid.uuid4(), name="Crew", plan="free", owner_user_id=owner,
        owner_email="o@example.org", owner_display_name="Olga",
    )  # fmt: skip
    key = new_key()
    actor = Actor(owner, Role.OWNER, team.id)
    team.issue_api_key(actor, key_id=key.key_id, user_id=owner, name="k", secret_hash="scrypt$x")
    return team, actor, key.key_id


class TeamStore:
    """One team; ``in_memory`` says whether it has a current copy in memory."""

    def __init__(self, team: Team, key_id: str) -> None:
        self.team, self.key_id = team, key_id
        self.in_memory = True
        self.queries = 0

    def get(self, aggregate_id: UUID, cls: type[Any]) -> Any:
        self.queries += 1
        return self.team if aggregate_id == self.team.id else None

    def get_if_current(self, aggregate_id: UUID, cls: type[Any]) -> Any:
        return self.team if self.in_memory and aggregate_id == self.team.id else None

    def team_of_key(self, key_id: str) -> UUID | None:
        self.queries += 1
        return self.team.id if key_id == self.key_id else None
