"""Pure tests of the aggregates: no database, no clock but the library's stamps."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TypeVar
from uuid import UUID, uuid4

from eventsourcing.domain import CanMutateAggregate
from pydantic import BaseModel

from aggregates.base import Actor, Aggregate, Role

AnyEvent = CanMutateAggregate[UUID]
A = TypeVar("A", bound=Aggregate)


def actor_in(team_id: UUID, role: Role, user_id: UUID | None = None) -> Actor:
    return Actor(user_id=user_id or uuid4(), role=role, team_id=team_id)


def names(events: Sequence[AnyEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def data(event: AnyEvent) -> dict[str, object]:
    """The event's own fields, without the envelope every event has."""
    assert isinstance(event, BaseModel)
    envelope = {"originator_id", "originator_version", "timestamp", "metadata", "originator_topic"}
    return {k: v for k, v in event.model_dump().items() if k not in envelope}


def through_json(event: AnyEvent) -> AnyEvent:
    """What the event store gives back: the model's JSON, parsed by the class again."""
    assert isinstance(event, BaseModel)
    again = type(event)(**json.loads(event.model_dump_json()))
    assert again == event
    assert isinstance(again, CanMutateAggregate)
    return again


def replay(cls: type[A], events: Sequence[AnyEvent]) -> A:
    """Rebuilds an aggregate from stored history the way the library's repository does."""
    aggregate: A | None = None
    for stored in map(through_json, events):
        aggregate = stored.mutate(aggregate)
    assert isinstance(aggregate, cls)
    return aggregate
