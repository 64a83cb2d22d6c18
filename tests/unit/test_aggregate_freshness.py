"""The bookkeeping of infra.aggregate_freshness, fed rows by hand (the reading
itself runs against PostgreSQL in tests/integration)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from infra import aggregate_freshness
from infra.aggregate_freshness import AggregateFreshness

A, B = uuid.UUID(int=1), uuid.UUID(int=2)


class _Rows:
    """Answers the reader's query for changes with the changes given."""

    def __init__(self) -> None:
        self.changes: list[tuple[int, uuid.UUID, int]] = []

    def execute(self, query: str, params: Any = None) -> _Rows:
        return self

    def fetchall(self) -> list[tuple[int, uuid.UUID, int]]:
        changes, self.changes = self.changes, []
        return changes


def _unread() -> AggregateFreshness:
    return AggregateFreshness(
        lambda: None,  # type: ignore[arg-type,return-value]
        "unused",
        head=lambda _: 10,
    )


def _reading(head: int) -> tuple[AggregateFreshness, _Rows]:
    freshness = AggregateFreshness(
        lambda: None,  # type: ignore[arg-type,return-value]
        "unused",
        head=lambda _: head,
    )
    rows = _Rows()
    freshness._read(rows)  # type: ignore[arg-type]
    return freshness, rows


def test_nothing_is_current_before_the_first_read() -> None:
    freshness = _unread()
    assert freshness.mark() is None
    freshness.saved(A, 10)
    assert not freshness.is_current(A, 1)


def test_a_copy_is_current_until_a_newer_version_is_read() -> None:
    freshness, rows = _reading(head=10)
    freshness.loaded(A, freshness.mark())
    assert freshness.is_current(A, 3)
    rows.changes = [(11, B, 1), (12, A, 4)]
    freshness._read(rows)  # type: ignore[arg-type]
    assert not freshness.is_current(A, 3)
    assert freshness.is_current(A, 4)
    assert not freshness.is_current(B, 1)  # never loaded here


def test_first_versions_take_no_memory() -> None:
    freshness, rows = _reading(head=10)
    rows.changes = [(11 + n, uuid.UUID(int=100 + n), 1) for n in range(50)]
    freshness._read(rows)  # type: ignore[arg-type]
    assert freshness._versions == {}
    assert freshness.position == 60


def test_doubt_and_unmarked_loads_are_not_current() -> None:
    freshness, _ = _reading(head=10)
    freshness.loaded(A, freshness.mark())
    freshness.doubt(A)
    assert not freshness.is_current(A, 3)
    freshness.loaded(B, None)
    assert not freshness.is_current(B, 1)


def test_a_reader_that_stopped_reading_vouches_for_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    freshness, _ = _reading(head=10)
    freshness.loaded(A, freshness.mark())
    later = time.monotonic() + aggregate_freshness.STALE_AFTER + 1
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert not freshness.is_current(A, 3)
    assert freshness.mark() is None


def test_past_the_memory_bound_every_earlier_copy_is_loaded_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(aggregate_freshness, "MAX_VERSIONS", 3)
    freshness, rows = _reading(head=10)
    freshness.loaded(A, freshness.mark())
    rows.changes = [(11 + n, uuid.UUID(int=100 + n), 2) for n in range(3)]
    freshness._read(rows)  # type: ignore[arg-type]
    assert freshness.is_current(A, 3)  # fits: nothing forgotten
    rows.changes = [(14, B, 2)]
    freshness._read(rows)  # type: ignore[arg-type]
    assert not freshness.is_current(A, 3)  # loaded before what was forgotten
    freshness.loaded(A, freshness.mark())
    assert freshness.is_current(A, 3)


def test_a_copy_saved_before_the_first_read_s_head_is_not_vouched_for() -> None:
    freshness, _ = _reading(head=10)
    freshness.saved(A, 9)  # its save raced the first read: 10 may have changed it
    assert not freshness.is_current(A, 3)
    freshness.saved(B, 10)  # every later event is one the reader reads
    assert freshness.is_current(B, 3)
