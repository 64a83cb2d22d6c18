"""Running a command against a fake store: the team authentication loaded is
reused once, and commands that share an aggregate take turns."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar
from uuid import UUID

from aggregates.base import Actor, Aggregate, EventMetadata, Role
from aggregates.team import Team
from commands.context import CommandContext
from commands.ports import Conflict, StoredResponse
from commands.records import CommandRecord
from commands.unit_of_work import Decision, Session, run_command

A = TypeVar("A", bound=Aggregate)


class FakeStore:
    """Holds aggregates in memory; ``conflicts`` saves fail first."""

    def __init__(self, conflicts: int = 0) -> None:
        self.aggregates: dict[UUID, Aggregate] = {}
        self.loads: list[UUID] = []
        self.conflicts = conflicts
        self.position = 0
        self.saving = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def get(self, aggregate_id: UUID, cls: type[A]) -> A | None:
        self.loads.append(aggregate_id)
        found = self.aggregates.get(aggregate_id)
        return found if isinstance(found, cls) else None

    def get_if_current(self, aggregate_id: UUID, cls: type[A]) -> A | None:
        return None  # as a store with nothing in memory: callers fall back to get

    def save(
        self,
        aggregates: Sequence[Aggregate],
        *,
        metadata: EventMetadata,
        records: Sequence[CommandRecord] = (),
    ) -> list[int]:
        self.saving.set()
        self.release.wait(timeout=10)
        if self.conflicts:
            self.conflicts -= 1
            raise Conflict("lost a race")
        self.position += 1
        return [self.position]

    def head_position(self) -> int:
        return self.position

    def find_idempotent_response(self, team_id: UUID, key: str) -> StoredResponse | None:
        return None

    def team_of_key(self, key_id: str) -> UUID | None:
        return None


def _team() -> Team:
    return Team.create(
        id=uuid.uuid4(),
        name="Crew",
        plan="free",
        owner_user_id=uuid.uuid4(),
        owner_email="owner@example.org",
        owner_display_name="Olga",
    )


def _reading_the_team(team: Team) -> Any:
    def decide(session: Session) -> Decision:
        found = session.read(team.id, Team, what="team")
        session.start(_team())  # something to save
        return Decision({"name": found.name}, None)

    return decide


def test_the_first_attempt_consults_the_team_authentication_loaded() -> None:
    store = FakeStore()
    team = _team()
    store.aggregates[team.id] = team
    context = CommandContext(Actor(uuid.uuid4(), Role.OWNER, team.id), team=team)

    result = run_command(store, context, "Read", {}, _reading_the_team(team))

    assert result.data == {"name": "Crew"}
    assert team.id not in store.loads


def test_a_retry_after_a_lost_race_loads_the_team_afresh() -> None:
    store = FakeStore(conflicts=1)
    team = _team()
    store.aggregates[team.id] = team
    context = CommandContext(Actor(uuid.uuid4(), Role.OWNER, team.id), team=team)

    run_command(store, context, "Read", {}, _reading_the_team(team))

    assert store.loads.count(team.id) == 1


def test_commands_serialized_on_one_key_take_turns() -> None:
    store = FakeStore()
    team = _team()
    store.aggregates[team.id] = team
    context = CommandContext(Actor(uuid.uuid4(), Role.OWNER, team.id))
    decided: list[str] = []

    def deciding(name: str) -> Any:
        def decide(session: Session) -> Decision:
            decided.append(name)
            session.start(_team())
            return Decision({}, None)

        return decide

    store.release.clear()
    first = threading.Thread(
        target=run_command,
        args=(store, context, "First", {}, deciding("first")),
        kwargs={"serialize_on": team.id},
    )
    first.start()
    assert store.saving.wait(timeout=10)
    second = threading.Thread(
        target=run_command,
        args=(store, context, "Second", {}, deciding("second")),
        kwargs={"serialize_on": team.id},
    )
    second.start()
    second.join(timeout=0.2)  # bounded: it must still be waiting its turn
    assert decided == ["first"]
    store.release.set()
    first.join(timeout=10)
    second.join(timeout=10)
    assert decided == ["first", "second"]
