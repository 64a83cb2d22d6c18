"""The event store on real PostgreSQL: order, gap-free positions, metadata."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from eventsourcing.domain import event

from aggregates.base import Aggregate, EventMetadata
from commands.ports import Conflict
from infra.event_store import EventStore


class Counter(Aggregate):
    @event("Started")
    def __init__(self, label: str) -> None:
        self.label = label
        self.total = Decimal(0)

    @event("Added")
    def add(self, amount: Decimal) -> None:
        self.total += amount


def _metadata(n: int) -> EventMetadata:
    return EventMetadata(
        team_id=uuid.UUID(int=7),
        actor_user_id=uuid.UUID(int=n + 1),
        actor_key_id=f"key{n}",
        command="AddToCounter",
        idempotency_key=f"idem-{n}",
        correlation_id=f"corr-{n}",
        causation_id=f"cause-{n}",
        request_id=f"req-{n}",
    )


def test_ten_thousand_events_come_back_in_position_order_without_gaps(store: EventStore) -> None:
    counters = [Counter(label=f"c{i}") for i in range(1_000)]
    expected_versions: dict[uuid.UUID, int] = {}
    for round_ in range(10):
        batch = counters[round_ * 100 : (round_ + 1) * 100]
        for counter in batch:
            for step in range(9):
                counter.add(Decimal(f"{step}.25"))
        for counter in batch:
            store.save([counter], metadata=_metadata(round_))
            expected_versions[counter.id] = counter.version

    notifications = []
    position = 0
    while True:
        page = store.recorder_.select_notifications(position, 1_000, inclusive_of_start=False)
        if not page:
            break
        notifications.extend(page)
        position = page[-1].id

    assert len(notifications) == 10_000
    ids = [n.id for n in notifications]
    # Every save here committed, so nothing burned a position: contiguous.
    assert ids == list(range(ids[0], ids[0] + 10_000))
    assert store.head_position() == ids[-1]

    seen_versions: dict[uuid.UUID, list[int]] = {}
    mapper = store.mapper
    for n in notifications:
        seen_versions.setdefault(n.originator_id, []).append(n.originator_version)
        domain_event = mapper.to_domain_event(n)
        round_ = ids.index(n.id) // 1_000
        assert domain_event.metadata == _metadata(round_)  # type: ignore[attr-defined]
    assert all(v == list(range(1, 11)) for v in seen_versions.values())
    assert {k: max(v) for k, v in seen_versions.items()} == expected_versions


def test_aggregates_reload_with_exact_values(store: EventStore) -> None:
    counter = Counter(label="exact")
    counter.add(Decimal("0.1"))
    counter.add(Decimal("0.2"))
    store.save([counter], metadata=_metadata(0))
    loaded: Counter = store.repository.get(counter.id)
    assert loaded.total == Decimal("0.3")
    assert loaded.version == 3


def test_a_stale_save_appends_nothing(store: EventStore) -> None:
    counter = Counter(label="race")
    store.save([counter], metadata=_metadata(0))
    first: Counter = store.repository.get(counter.id)
    second: Counter = store.repository.get(counter.id)
    first.add(Decimal(1))
    store.save([first], metadata=_metadata(1))
    second.add(Decimal(2))
    second.add(Decimal(3))
    head = store.head_position()
    with pytest.raises(Conflict):
        store.save([second], metadata=_metadata(2))
    assert store.head_position() == head
    assert store.repository.get(counter.id).total == Decimal(1)
