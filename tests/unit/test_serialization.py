"""Stored events round-trip their values exactly, with no type tags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import orjson
import pytest
from eventsourcing.domain import event
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from aggregates.base import Aggregate, EventMetadata
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
