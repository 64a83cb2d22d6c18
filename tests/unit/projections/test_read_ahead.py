"""Reading ahead: the next batch is read (and decoded) only after a full one,
taken only for the position it was read after, and a decode that failed
ahead is tried again (and fails) where the batch is applied."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from uuid import UUID

import pytest

from aggregates.base import DomainEvent
from infra.devstack.processes import wait_until
from projections.base import LoggedEvent
from projections.read_ahead import ReadAhead

READ_TOPIC = "read"
OTHER_TOPIC = "other"


class Log:
    """Positions 1..size; position 3 does not decode."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.reads: list[int] = []
        self.returned: list[int] = []
        self.decodes: list[int] = []
        self.lock = threading.Lock()

    def read(self, after: int, limit: int) -> Sequence[LoggedEvent]:
        with self.lock:
            self.reads.append(after)
        last = min(after + limit, self.size)
        found = [
            LoggedEvent(
                id=position,
                originator_id=UUID(int=position),
                originator_version=1,
                topic=READ_TOPIC if position % 2 else OTHER_TOPIC,
                state=b"{}",
            )
            for position in range(after + 1, last + 1)
        ]
        with self.lock:
            self.returned.append(after)
        return found

    def decode(self, notification: LoggedEvent) -> DomainEvent:
        with self.lock:
            self.decodes.append(notification.id)
        if notification.id == 3:
            raise ValueError("undecodable")
        return DomainEvent(
            originator_id=notification.originator_id,
            originator_version=1,
            timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        )


@pytest.fixture
def log() -> Log:
    return Log(size=10)


@pytest.fixture
def ahead(log: Log) -> Iterator[ReadAhead]:
    reader = ReadAhead(log.read, log.decode, topics=frozenset({READ_TOPIC}), limit=4, name="t")
    yield reader
    reader.close()


def test_a_full_batch_has_the_next_one_read_and_decoded_behind_it(
    log: Log, ahead: ReadAhead
) -> None:
    log.size = 8  # what is read ahead of the second batch holds nothing to decode
    batch, _ = ahead.read(0)
    assert [n.id for n in batch] == [1, 2, 3, 4]
    second, decode = ahead.read(4)
    assert [n.id for n in second] == [5, 6, 7, 8]
    assert log.reads[:2] == [0, 4]
    decoded_before = list(log.decodes)
    assert {5, 7} <= set(decoded_before)  # the topics read, decoded ahead
    assert 6 not in decoded_before  # another topic: never decoded
    assert decode(second[0]).originator_id == UUID(int=5)
    assert log.decodes == decoded_before  # taken, not decoded again


def test_nothing_is_read_after_a_batch_that_is_not_full(log: Log, ahead: ReadAhead) -> None:
    ahead.read(0)
    ahead.read(4)
    last, _ = ahead.read(8)
    assert [n.id for n in last] == [9, 10]
    ahead.close()
    assert set(log.reads) == {0, 4, 8}


def test_a_batch_read_ahead_that_found_the_head_is_read_again(log: Log, ahead: ReadAhead) -> None:
    # Events committed after it (their notification already taken by the
    # runner) must not wait for the next poll.
    log.size = 6
    ahead.read(0)  # full: what follows is read ahead, and finds 5 and 6
    wait_until(lambda: 4 in log.returned, timeout=5, what="the read ahead")
    log.size = 10
    second, _ = ahead.read(4)
    assert [n.id for n in second] == [5, 6, 7, 8]


def test_a_batch_read_ahead_for_another_position_is_dropped(log: Log, ahead: ReadAhead) -> None:
    ahead.read(0)  # 5.. is read ahead
    again, _ = ahead.read(0)  # the batch failed: the runner reads it again
    assert [n.id for n in again] == [1, 2, 3, 4]
    assert log.reads.count(0) == 2


def test_an_event_that_failed_to_decode_ahead_fails_where_it_is_applied(
    log: Log, ahead: ReadAhead
) -> None:
    first, decode = ahead.read(0)
    assert decode(first[0]).originator_id == UUID(int=1)
    with pytest.raises(ValueError, match="undecodable"):
        decode(first[2])
