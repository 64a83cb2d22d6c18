from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import StoredEvent
from hypothesis import given
from hypothesis import strategies as st

from aggregates.errors import InvalidValue, QuotaExceeded, UnknownPlan
from aggregates.plans import MONTHLY_ENTRY_QUOTAS, quota_for
from aggregates.quota import MonthlyQuota
from infra.serialization import OrjsonTranscoder, PydanticMapper
from tests.unit.domain import AnyEvent, data, names, replay

TEAM = uuid4()


def test_plans_and_their_quotas() -> None:
    assert quota_for("free") == 100
    assert quota_for("team") == 10_000
    assert quota_for("enterprise") == 1_000_000
    with pytest.raises(UnknownPlan) as caught:
        quota_for("Free")
    assert caught.value.code == "VALIDATION_ERROR"
    assert caught.value.details["allowed"] == sorted(MONTHLY_ENTRY_QUOTAS)


def test_the_id_is_the_same_for_the_same_team_and_month_only() -> None:
    assert MonthlyQuota.id_for(TEAM, "2025-03") == MonthlyQuota.id_for(TEAM, "2025-03")
    assert MonthlyQuota.id_for(TEAM, "2025-03") != MonthlyQuota.id_for(TEAM, "2025-04")
    assert MonthlyQuota.id_for(TEAM, "2025-03") != MonthlyQuota.id_for(uuid4(), "2025-03")
    quota = MonthlyQuota.start(TEAM, "2025-03")
    assert quota.id == MonthlyQuota.id_for(TEAM, "2025-03")
    events = quota.collect_events()
    assert names(events) == ["Started"]
    assert data(events[0]) == {"team_id": TEAM, "month": "2025-03"}


@pytest.mark.parametrize("month", ["2025-3", "2025-13", "2025-00", "25-03", "2025/03", " 2025-03"])
def test_months_must_be_yyyy_mm(month: str) -> None:
    with pytest.raises(InvalidValue):
        MonthlyQuota.id_for(TEAM, month)


def test_reserve_counts_until_the_limit_then_refuses() -> None:
    quota = MonthlyQuota.start(TEAM, "2025-03")
    quota.collect_events()
    entries = [uuid4() for _ in range(3)]
    for entry in entries:
        quota.reserve(entry, limit=3)
    events = quota.collect_events()
    assert [data(e) for e in events if names([e]) == ["EntryCounted"]] == [
        {"entry_id": e, "limit": 3} for e in entries
    ]
    with pytest.raises(QuotaExceeded) as caught:
        quota.reserve(uuid4(), limit=3)
    assert caught.value.code == "QUOTA_EXCEEDED"
    assert caught.value.details == {"limit": 3, "used": 3, "month": "2025-03"}
    assert quota.collect_events() == []
    quota.reserve(uuid4(), limit=4)
    assert quota.used == 4


def test_a_zero_limit_refuses_the_first_entry_and_negative_is_invalid() -> None:
    quota = MonthlyQuota.start(TEAM, "2025-03")
    with pytest.raises(QuotaExceeded):
        quota.reserve(uuid4(), limit=0)
    with pytest.raises(InvalidValue):
        quota.reserve(uuid4(), limit=-1)
    assert quota.used == 0


def test_threshold_is_reached_once_at_ninety_percent() -> None:
    quota = MonthlyQuota.start(TEAM, "2025-03")
    history: list[AnyEvent] = list(quota.collect_events())
    for _ in range(89):
        quota.reserve(uuid4(), limit=100)
    history += quota.collect_events()
    assert "ThresholdReached" not in names(history)
    quota.reserve(uuid4(), limit=100)
    crossing = quota.collect_events()
    assert names(crossing) == ["EntryCounted", "ThresholdReached"]
    assert data(crossing[1]) == {
        "threshold_percent": 90,
        "used": 90,
        "limit": 100,
        "month": "2025-03",
    }
    history += crossing
    for _ in range(10):
        quota.reserve(uuid4(), limit=100)
    history += quota.collect_events()
    assert names(history).count("ThresholdReached") == 1
    assert replay(MonthlyQuota, history) == quota


def test_a_new_limit_mid_month_does_not_warn_again() -> None:
    quota = MonthlyQuota.start(TEAM, "2025-03")
    for _ in range(9):
        quota.reserve(uuid4(), limit=10)
    quota.collect_events()
    for limit in (100, 11, 12):
        quota.reserve(uuid4(), limit=limit)
    assert "ThresholdReached" not in names(quota.collect_events())
    assert quota.threshold_reached


def test_a_lower_limit_mid_month_warns_on_the_next_entry() -> None:
    quota = MonthlyQuota.start(TEAM, "2025-03")
    for _ in range(5):
        quota.reserve(uuid4(), limit=10_000)
    quota.collect_events()
    quota.reserve(uuid4(), limit=6)
    # The sixth of six: the same entry also takes the last of the lower limit.
    assert names(quota.collect_events()) == ["EntryCounted", "ThresholdReached", "Exhausted"]


def test_the_entry_that_takes_the_last_of_the_limit_records_exhausted_once() -> None:
    quota = MonthlyQuota.start(TEAM, "2025-03")
    history: list[AnyEvent] = list(quota.collect_events())
    for _ in range(9):
        quota.reserve(uuid4(), limit=10)
    history += quota.collect_events()
    assert "Exhausted" not in names(history)
    assert not quota.exhausted
    quota.reserve(uuid4(), limit=10)
    last = quota.collect_events()
    assert names(last) == ["EntryCounted", "Exhausted"]
    assert data(last[1]) == {"used": 10, "limit": 10, "month": "2025-03"}
    assert quota.exhausted
    history += last
    # A higher limit later in the month lets more in, but the month was
    # exhausted once: no second event when the new limit is used up too.
    quota.reserve(uuid4(), limit=11)
    assert names(quota.collect_events()) == ["EntryCounted"]
    assert replay(MonthlyQuota, history).exhausted


def test_a_limit_of_one_warns_and_is_exhausted_by_the_same_entry() -> None:
    quota = MonthlyQuota.start(TEAM, "2025-03")
    quota.collect_events()
    quota.reserve(uuid4(), limit=1)
    assert names(quota.collect_events()) == ["EntryCounted", "ThresholdReached", "Exhausted"]


@given(st.lists(st.integers(min_value=0, max_value=30), max_size=80))
def test_reserve_never_exceeds_the_limit_and_warns_and_exhausts_at_most_once(
    limits: list[int],
) -> None:
    quota = MonthlyQuota.start(TEAM, "2025-03")
    history: list[AnyEvent] = list(quota.collect_events())
    counted = 0
    should_warn = False
    should_exhaust = False
    for limit in limits:
        before = quota.used
        refusal: QuotaExceeded | None = None
        try:
            quota.reserve(uuid4(), limit=limit)
        except QuotaExceeded as refused:
            refusal = refused
        if refusal is not None:
            assert before >= limit
            assert refusal.details["used"] == before
            assert quota.pending_events == []
        else:
            counted += 1
            assert quota.used == before + 1 <= limit
            should_warn = should_warn or quota.used * 100 >= limit * 90
            should_exhaust = should_exhaust or quota.used >= limit
        history += quota.collect_events()
    assert quota.used == counted == names(history).count("EntryCounted")
    assert names(history).count("ThresholdReached") == (1 if should_warn else 0)
    assert quota.threshold_reached is should_warn
    assert names(history).count("Exhausted") == (1 if should_exhaust else 0)
    assert quota.exhausted is should_exhaust
    assert replay(MonthlyQuota, history) == quota


# -- ThresholdReached v1 (stored before it carried its month) ----------------------

mapper = PydanticMapper(transcoder=OrjsonTranscoder())
THRESHOLD_TOPIC = "aggregates.quota:MonthlyQuota.ThresholdReached"


def _v1_bytes(quota_id: UUID, timestamp: str, metadata: str, version: int = 91) -> bytes:
    """Exactly what the mapper stored for a ThresholdReached before version 2."""
    return (
        f'{{"originator_id":"{quota_id}","originator_version":{version},'
        f'"timestamp":"{timestamp}","metadata":{metadata},'
        '"threshold_percent":90,"used":90,"limit":100}'
    ).encode()


def _decode_v1(quota_id: UUID, timestamp: str, metadata: str) -> Any:
    stored = StoredEvent(quota_id, 91, THRESHOLD_TOPIC, _v1_bytes(quota_id, timestamp, metadata))
    return mapper.to_domain_event(stored)


def _metadata_of(team_id: UUID) -> str:
    return f'{{"team_id":"{team_id}","command":"CreateEntry"}}'


def test_a_v1_threshold_event_gets_the_month_of_its_timestamp() -> None:
    quota_id = MonthlyQuota.id_for(TEAM, "2025-03")
    decoded = _decode_v1(quota_id, "2025-03-17T09:30:00+00:00", _metadata_of(TEAM))
    assert isinstance(decoded, MonthlyQuota.ThresholdReached)
    assert data(decoded) == {"threshold_percent": 90, "used": 90, "limit": 100, "month": "2025-03"}
    assert decoded.metadata is not None
    assert decoded.metadata.command == "CreateEntry"


def test_a_v1_event_stamped_just_after_its_month_ended_keeps_its_month() -> None:
    """The command picks the month, then the event is stamped: across midnight at
    a month's end the two differ, and the quota's id (team + month) says which."""
    quota_id = MonthlyQuota.id_for(TEAM, "2024-12")
    decoded = _decode_v1(quota_id, "2025-01-01T00:00:00.000400+00:00", _metadata_of(TEAM))
    assert decoded.month == "2024-12"


def test_a_v1_event_without_a_team_to_check_takes_its_timestamp_month() -> None:
    quota_id = MonthlyQuota.id_for(TEAM, "2024-12")
    decoded = _decode_v1(quota_id, "2025-01-01T00:00:00.000400+00:00", "null")
    assert decoded.month == "2025-01"


def test_a_quota_replays_from_v1_and_v2_threshold_events_alike() -> None:
    quota = MonthlyQuota.start(TEAM, "2025-03")
    for _ in range(90):
        quota.reserve(uuid4(), limit=100)
    history = quota.collect_events()
    assert isinstance(history[-1], MonthlyQuota.ThresholdReached)
    version, stamp = history[-1].originator_version, history[-1].timestamp.isoformat()
    old = StoredEvent(
        quota.id, version, THRESHOLD_TOPIC, _v1_bytes(quota.id, stamp, "null", version)
    )
    replayed = replay(MonthlyQuota, [*history[:-1], mapper.to_domain_event(old)])  # type: ignore[list-item]
    assert replayed == quota
    assert replayed.threshold_reached
