"""Due times of cron schedules: the window, the catch-up limit, time zones and DST."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import takewhile
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.scheduler import due_times, job_lock_key, next_due

BERLIN = ZoneInfo("Europe/Berlin")
# 2026: clocks go forward on 29 March (02:00 CET -> 03:00 CEST) and back on
# 25 October (03:00 CEST -> 02:00 CET).
SPRING = datetime(2026, 3, 29, tzinfo=BERLIN)
AUTUMN = datetime(2026, 10, 25, tzinfo=BERLIN)
ALL = 10_000


def berlin(times: list[datetime]) -> list[str]:
    return [t.astimezone(BERLIN).strftime("%H:%M%z") for t in times]


def at(day: datetime, hours: float) -> datetime:
    """``hours`` of real time after the midnight of ``day``."""
    return (day.astimezone(UTC) + timedelta(hours=hours)).astimezone(UTC)


def test_every_minute_in_the_half_open_window() -> None:
    start = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    found = due_times("* * * * *", "UTC", start, start + timedelta(minutes=3), ALL)
    # (after, until]: the due time at ``after`` was the previous window's.
    assert found == [start + timedelta(minutes=n) for n in (1, 2, 3)]
    assert all(t.tzinfo == UTC for t in found)


def test_fractions_of_seconds_around_the_bounds() -> None:
    due = datetime(2026, 1, 1, 10, 1, tzinfo=UTC)
    tiny = timedelta(microseconds=1)
    assert due_times("* * * * *", "UTC", due - tiny, due, ALL) == [due]
    assert due_times("* * * * *", "UTC", due - tiny, due - tiny, ALL) == []
    assert due_times("* * * * *", "UTC", due, due + timedelta(seconds=59.9), ALL) == []
    assert due_times("* * * * *", "UTC", due - timedelta(seconds=59.5), due + tiny, ALL) == [due]


def test_the_latest_ones_when_more_are_due_than_the_limit() -> None:
    start = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    until = start + timedelta(minutes=7, seconds=30)
    assert due_times("* * * * *", "UTC", start, until, 3) == [
        start + timedelta(minutes=n) for n in (5, 6, 7)
    ]
    assert due_times("* * * * *", "UTC", start, until, 1) == [start + timedelta(minutes=7)]
    assert due_times("* * * * *", "UTC", start, until, 0) == []
    assert len(due_times("* * * * *", "UTC", start, until, 7)) == 7
    assert len(due_times("* * * * *", "UTC", start, until, 8)) == 7


def test_a_long_downtime_costs_the_limit_not_the_missed_count() -> None:
    start = datetime(2000, 1, 1, tzinfo=UTC)
    until = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)  # 26 years of minutes
    assert due_times("* * * * *", "UTC", start, until, 2) == [
        datetime(2025, 12, 31, 23, 59, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, tzinfo=UTC),
    ]


def test_an_empty_or_backward_window_has_none() -> None:
    start = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert due_times("* * * * *", "UTC", start, start, ALL) == []
    assert due_times("* * * * *", "UTC", start, start - timedelta(hours=1), ALL) == []


def test_an_expression_that_never_fires_has_no_due_times() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert due_times("0 0 31 2 *", "UTC", start, start + timedelta(days=800), ALL) == []
    assert next_due("0 0 31 2 *", "UTC", start) is None


def test_local_time_of_the_schedules_zone() -> None:
    start = datetime(2026, 1, 4, 12, tzinfo=UTC)  # Sunday, 21:00 in Tokyo
    found = due_times("0 9 * * mon-fri", "Asia/Tokyo", start, start + timedelta(days=7), ALL)
    assert found[0] == datetime(2026, 1, 5, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo
    assert len(found) == 5
    assert next_due("0 9 * * *", "Europe/Berlin", start) == datetime(2026, 1, 5, 8, tzinfo=UTC)
    assert [t.weekday() for t in found] == [0, 1, 2, 3, 4]
    july = datetime(2026, 7, 1, tzinfo=UTC)
    assert next_due("0 9 * * *", "Europe/Berlin", july) == datetime(2026, 7, 1, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        # A fixed local time in the gap fires at the first minute after it.
        ("30 2 * * *", ["03:00+0200"]),
        ("0 2 * * *", ["03:00+0200"]),
        ("15 2,3 * * *", ["03:00+0200", "03:15+0200"]),
        ("0 3 * * *", ["03:00+0200"]),
        # Real-time expressions: nothing in the gap.
        ("30 * * * *", ["00:30+0100", "01:30+0100", "03:30+0200"]),
        ("*/30 1-3 * * *", ["01:00+0100", "01:30+0100", "03:00+0200", "03:30+0200"]),
    ],
)
def test_spring_forward_in_berlin(cron: str, expected: list[str]) -> None:
    found = due_times(cron, "Europe/Berlin", SPRING, at(SPRING, 3), ALL)  # until 04:00 CEST
    assert berlin(found) == expected


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        # A fixed local time in the overlap fires once, at the first of the two.
        ("30 2 * * *", ["02:30+0200"]),
        ("0 2 * * *", ["02:00+0200"]),
        ("0 3 * * *", ["03:00+0100"]),
        # Real-time expressions: both 02:30s.
        ("30 * * * *", ["00:30+0200", "01:30+0200", "02:30+0200", "02:30+0100", "03:30+0100"]),
    ],
)
def test_fall_back_in_berlin(cron: str, expected: list[str]) -> None:
    found = due_times(cron, "Europe/Berlin", AUTUMN, at(AUTUMN, 5), ALL)  # until 04:00 CET
    assert berlin(found) == expected


CRONS = ["* * * * *", "*/7 * * * *", "30 2 * * *", "0 2,3 * * *", "30 * * * *", "*/30 1-3 * * *"]


@settings(max_examples=60, deadline=None)
@given(
    cron=st.sampled_from(CRONS),
    day=st.sampled_from([SPRING, AUTUMN]),
    looks=st.lists(st.floats(min_value=0.01, max_value=1.5), min_size=1, max_size=12),
    limit=st.integers(min_value=1, max_value=4),
)
def test_ticking_through_a_transition_issues_each_due_time_once_in_order(
    cron: str, day: datetime, looks: list[float], limit: int
) -> None:
    """A scheduler that looks at irregular moments, issuing after the last one
    it issued, issues what one look at the end would, except what the limit
    made it skip between two looks; never one twice, never one out of order."""
    start = at(day, 0)
    everything = list(takewhile(lambda t: t <= at(day, 20), _all_after(cron, start)))
    issued: list[datetime] = []
    now = start
    for hours in looks:
        now += timedelta(hours=hours)
        after = issued[-1] if issued else start
        due = due_times(cron, "Europe/Berlin", after, now, limit)
        missed = [t for t in everything if after < t <= now]
        assert due == missed[-limit:]
        issued += due
    assert issued == sorted(set(issued))
    assert set(issued) <= set(everything)


def _all_after(cron: str, start: datetime) -> Iterator[datetime]:
    """Every due time after ``start``, one step at a time (no catch-up window)."""
    found = next_due(cron, "Europe/Berlin", start)
    while found is not None:
        yield found
        found = next_due(cron, "Europe/Berlin", found)


def test_job_lock_keys_are_stable_signed_32_bit_ints() -> None:
    assert job_lock_key("prompts") == job_lock_key("prompts")
    assert job_lock_key("prompts") != job_lock_key("digests")
    for name in ("prompts", "digests", "", "x" * 200):
        assert -(2**31) <= job_lock_key(name) < 2**31
