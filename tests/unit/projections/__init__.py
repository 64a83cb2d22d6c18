"""Pure tests of the read models' folds: real aggregates' events, no database."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast
from unittest import mock
from uuid import uuid4

from eventsourcing.utils import get_topic

from aggregates.base import Actor, Aggregate, DomainEvent, Role
from aggregates.team import Team
from projections.base import Cursor, Fact
from projections.folding import Key, Row, Table, TableFold

__all__ = ["Log", "fold_rows", "new_team"]


class Log:
    """Events as the global log would hold them: each at the next position."""

    def __init__(self) -> None:
        self.position = 0

    def facts(self, aggregate: Aggregate) -> list[Fact]:
        found = []
        for event in aggregate.collect_events():
            assert isinstance(event, DomainEvent)
            self.position += 1
            found.append(Fact(self.position, get_topic(type(event)), event))
        return found


def fold_rows(
    table_fold: TableFold, facts: Iterable[Fact], rows: dict[Key, Row] | None = None
) -> dict[Key, Row]:
    """The table after ``table_fold.apply`` writes ``facts`` onto ``rows``: the
    real apply, with a dict in place of PostgreSQL behind ``Table.load/write``."""
    stored = dict(rows or {})

    def load(table: Table, cur: Any, keys: Sequence[Key]) -> dict[Key, Row]:
        return {key: stored[key] for key in keys if key in stored}

    def write(
        table: Table,
        cur: Any,
        upserts: Sequence[Row],
        deletes: Sequence[Key],
        inserts: Sequence[Row] = (),
    ) -> None:
        for key in deletes:
            del stored[key]
        # As PostgreSQL's primary key would: an insert must be a new row.
        assert not {table.key_of(row) for row in inserts} & stored.keys(), "insert of a stored row"
        stored.update((table.key_of(row), row) for row in [*upserts, *inserts])

    with mock.patch.object(Table, "load", load), mock.patch.object(Table, "write", write):
        table_fold.apply(cast(Cursor, None), list(facts))
    return stored


def new_team() -> tuple[Team, Actor]:
    """A team on the free plan and its owner, acting."""
    owner_id = uuid4()
    team = Team.create(
        id=uuid4(),
        name="Crew",
        plan="free",
        owner_user_id=owner_id,
        owner_email="olga@example.org",
        owner_display_name="Olga",
    )
    return team, Actor(user_id=owner_id, role=Role.OWNER, team_id=team.id)
