"""Stored events round-trip their values exactly, with no type tags; snapshots
carry an aggregate's whole state; old stored shapes are upcast when read."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar
from uuid import UUID, uuid4

import orjson
import pytest
from eventsourcing.domain import Snapshot as LibrarySnapshot
from eventsourcing.domain import event
from eventsourcing.persistence import MapperDeserialisationError, ProgrammingError, StoredEvent
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from aggregates.base import Actor, Aggregate, EventMetadata, Role
from aggregates.team import Team
from infra.serialization import OrjsonTranscoder, PydanticMapper


class Ledger(Aggregate):
    @event("Opened")
    def __init__(self, owner: UUID, amount: Decimal, due: datetime) -> None:
        self.owner = owner
        self.amount = amount
        self.due = due


mapper = PydanticMapper(transcoder=OrjsonTranscoder())

aware_datetimes = st.datetimes(
    min_value=datetime(1970, 1, 2),  # noqa: DTZ001 - hypothesis bounds are naive
    max_value=datetime(9998, 12, 30),  # noqa: DTZ001
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
)


@given(
    owner=st.uuids(),
    amount=st.decimals(allow_nan=False, allow_infinity=False, places=None),
    due=aware_datetimes,
)
def test_values_survive_a_round_trip_exactly(owner: UUID, amount: Decimal, due: datetime) -> None:
    ledger = Ledger(owner=owner, amount=amount, due=due)
    (created,) = ledger.collect_events()
    restored = mapper.to_domain_event(mapper.to_stored_event(created))
    assert restored == created
    assert isinstance(restored.owner, UUID)  # type: ignore[attr-defined]
    assert restored.amount.as_tuple() == amount.as_tuple()  # type: ignore[attr-defined]
    assert restored.due == due  # type: ignore[attr-defined]


def test_event_timestamps_are_stored_in_utc() -> None:
    ledger = Ledger(owner=UUID(int=1), amount=Decimal("1.10"), due=datetime.now(UTC))
    (created,) = ledger.collect_events()
    state = orjson.loads(mapper.to_stored_event(created).state)
    assert state["timestamp"].endswith("+00:00")
    assert state["amount"] == "1.10"
    assert "_type_" not in state


def test_metadata_travels_inside_the_event_state() -> None:
    ledger = Ledger(owner=UUID(int=1), amount=Decimal(1), due=datetime.now(UTC))
    (created,) = ledger.collect_events()
    meta = EventMetadata(command="OpenLedger", correlation_id="c-1", actor_key_id="k1")
    stamped = created.model_copy(update={"metadata": meta})  # type: ignore[attr-defined]
    restored = mapper.to_domain_event(mapper.to_stored_event(stamped))
    assert restored.metadata == meta  # type: ignore[attr-defined]


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValidationError):
        Ledger.Opened(  # type: ignore[attr-defined]
            originator_id=UUID(int=1),
            originator_version=1,
            timestamp=datetime(2026, 1, 1),  # noqa: DTZ001 - the point of the test
            originator_topic="x",
            owner=UUID(int=2),
            amount=Decimal(1),
            due=datetime.now(UTC),
        )


# -- snapshots ---------------------------------------------------------------------


def _busy_team() -> Team:
    owner = Actor(uuid4(), Role.OWNER, uuid4())
    team = Team.create(
        id=owner.team_id, name="Acme", plan="team", owner_user_id=owner.user_id,
        owner_email="o@example.com", owner_display_name="O",
    )  # fmt: skip
    member = uuid4()
    team.add_member(owner, user_id=member, email="m@example.com", display_name="M", role=Role.ADMIN)
    team.issue_api_key(owner, key_id="k" * 16, user_id=member, name="laptop", secret_hash="h1")
    team.issue_api_key(owner, key_id="j" * 16, user_id=member, name="phone", secret_hash="h2")
    team.revoke_api_key(owner, "k" * 16)
    team.rename(owner, "Acme Inc")
    team.collect_events()
    return team


def test_a_team_snapshot_round_trips_its_whole_state() -> None:
    team = _busy_team()
    snapshot = Team.Snapshot.take(team)
    stored = mapper.to_stored_event(snapshot)
    assert (stored.originator_id, stored.originator_version) == (team.id, team.version)
    # Private attributes travel too, by their attribute names' aliases.
    assert set(orjson.loads(stored.state)["state"]) == {
        "created_on", "modified_on", "name", "plan", "members", "keys",
    }  # fmt: skip
    restored = mapper.to_domain_event(stored)
    assert restored == snapshot
    rebuilt = restored.mutate(None)
    assert isinstance(rebuilt, Team)
    assert vars(rebuilt) == vars(team)
    assert [m.role for m in rebuilt.members] == [Role.OWNER, Role.ADMIN]
    assert isinstance(rebuilt.key("k" * 16).user_id, UUID)


def test_a_restored_team_does_not_share_its_dicts_with_the_snapshot() -> None:
    team = _busy_team()
    snapshot = Team.Snapshot.take(team)
    rebuilt = snapshot.mutate(None)
    assert isinstance(rebuilt, Team)
    owner = Actor(team.owners[0].user_id, Role.OWNER, team.id)
    rebuilt.revoke_api_key(owner, "j" * 16)
    assert not snapshot.state.keys["j" * 16].revoked


def test_a_snapshot_that_would_forget_an_attribute_is_refused() -> None:
    team = _busy_team()
    team.nickname = "an attribute TeamState does not declare"  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match="nickname"):
        Team.Snapshot.take(team)


def test_only_pydantic_events_are_stored() -> None:
    team = _busy_team()
    library_snapshot = LibrarySnapshot.take(team)
    with pytest.raises(ProgrammingError, match="not a pydantic model"):
        mapper.to_stored_event(library_snapshot)


# -- upcasting -----------------------------------------------------------------------


class Thing(Aggregate):
    """A schema's life in three versions: v1 had ``size`` in centimetres, v2 added
    ``unit``, v3 renamed ``size`` to ``length``."""

    class Measured(Aggregate.Event):
        class_version: ClassVar[int] = 3

        length: int
        unit: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["unit"] = "cm"

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["length"] = state.pop("size")

    @event("Made")
    def __init__(self) -> None:
        self.length = 0

    @event(Measured)
    def measure(self, length: int, unit: str) -> None:
        self.length = length


MEASURED = StoredEvent(
    originator_id=UUID(int=5),
    originator_version=2,
    topic="tests.unit.test_serialization:Thing.Measured",
    state=b"",
)
ENVELOPE = b'"originator_id":"00000000-0000-0000-0000-000000000005","originator_version":2,'
STAMPED = b'"timestamp":"2026-01-31T10:00:00+00:00","metadata":null'


@pytest.mark.parametrize(
    ("stored", "length", "unit"),
    [
        (b"{" + ENVELOPE + STAMPED + b',"size":7}', 7, "cm"),
        (b"{" + ENVELOPE + STAMPED + b',"size":7,"unit":"mm","class_version":2}', 7, "mm"),
        (b"{" + ENVELOPE + STAMPED + b',"length":7,"unit":"in","class_version":3}', 7, "in"),
    ],
)
def test_stored_events_of_every_version_decode_as_the_current_class(
    stored: bytes, length: int, unit: str
) -> None:
    decoded = mapper.to_domain_event(replace(MEASURED, state=stored))
    assert isinstance(decoded, Thing.Measured)
    assert (decoded.length, decoded.unit) == (length, unit)


def test_new_events_are_stored_with_their_class_version() -> None:
    thing = Thing()
    thing.measure(length=3, unit="m")
    made, measured = thing.collect_events()
    assert "class_version" not in orjson.loads(mapper.to_stored_event(made).state)
    state = orjson.loads(mapper.to_stored_event(measured).state)
    assert state["class_version"] == 3
    assert mapper.to_domain_event(mapper.to_stored_event(measured)) == measured


def test_an_event_stored_by_newer_code_is_refused_not_guessed() -> None:
    stored = (
        b"{" + ENVELOPE + STAMPED + b',"length":7,"unit":"in","colour":"red","class_version":4}'
    )
    with pytest.raises(MapperDeserialisationError, match="class_version 4; this code knows 3"):
        mapper.to_domain_event(replace(MEASURED, state=stored))


def test_an_event_of_a_first_version_class_stored_by_newer_code_is_refused() -> None:
    # Events of classes with no upcasters are parsed straight from their bytes;
    # a stored class_version still sends them through the check.
    made = StoredEvent(
        originator_id=UUID(int=5),
        originator_version=1,
        topic="tests.unit.test_serialization:Thing.Made",
        state=b"{" + ENVELOPE.replace(b":2,", b":1,") + STAMPED
        + b',"originator_topic":"tests.unit.test_serialization:Thing","class_version":2}',
    )  # fmt: skip
    with pytest.raises(MapperDeserialisationError, match="class_version 2; this code knows 1"):
        mapper.to_domain_event(made)
    unversioned = replace(made, state=made.state.replace(b',"class_version":2', b""))
    decoded = mapper.to_domain_event(unversioned)
    assert type(decoded).__qualname__ == "Thing.Made"  # made by @event, unseen by mypy
