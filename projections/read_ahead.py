"""Reading the next batch of the log while the current one is applied.

A runner that is behind (a rebuild, a catch-up) spends much of each batch
waiting for PostgreSQL: to write the batch and commit it. A thread of its own
reads the next batch meanwhile and decodes the events the projection reads,
so that waiting and this work overlap (bench B3, `docs/benchmarks.md`).

Nothing here changes what is applied: a batch is still read after the
position the generation has recorded, and one read ahead for any other
position (the batch before it failed, the runner lost its lock) is dropped.
A batch that is not full is the head of the log, so nothing is read after it
until the runner asks; nor is a batch read ahead used unless it is full.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from aggregates.base import DomainEvent
from projections.base import Decode, LoggedEvent

__all__ = ["ReadAhead"]

Read = Callable[[int, int], Sequence[LoggedEvent]]


@dataclass(frozen=True, slots=True)
class _Batch:
    notifications: Sequence[LoggedEvent]
    decoded: dict[int, DomainEvent]


class ReadAhead:
    def __init__(
        self, read: Read, decode: Decode, *, topics: frozenset[str], limit: int, name: str
    ) -> None:
        self._read = read
        self._decode = decode
        self._topics = topics
        self._limit = limit
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"read-ahead-{name}")
        self._pending: tuple[int, Future[_Batch]] | None = None

    def read(self, after: int) -> tuple[Sequence[LoggedEvent], Decode]:
        """The batch after ``after`` (up to ``limit`` events), and how to decode
        its events: what was decoded ahead is taken, the rest decoded now."""
        pending, self._pending = self._pending, None
        batch = pending[1].result() if pending is not None and pending[0] == after else None
        if batch is None or len(batch.notifications) < self._limit:
            # Read now: one read ahead that found the head may predate events
            # whose notification the runner has just cleared.
            batch = self._fetch(after)
        if len(batch.notifications) == self._limit:
            last = batch.notifications[-1].id
            self._pending = (last, self._pool.submit(self._fetch, last))
        return batch.notifications, self._decoder(batch.decoded)

    def close(self) -> None:
        # Not waiting: a read stuck on a dead connection must not hold up the
        # runner's reconnect or the worker's shutdown; its result is dropped.
        self._pending = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _fetch(self, after: int) -> _Batch:
        notifications = self._read(after, self._limit)
        decoded: dict[int, DomainEvent] = {}
        for notification in notifications:
            if notification.topic in self._topics:
                try:
                    decoded[notification.id] = self._decode(notification)
                except Exception:  # noqa: BLE001, S112 - decoded again when applied, which fails there
                    continue
        return _Batch(notifications, decoded)

    def _decoder(self, decoded: dict[int, DomainEvent]) -> Decode:
        def decode(notification: LoggedEvent) -> DomainEvent:
            event = decoded.get(notification.id)
            return event if event is not None else self._decode(notification)

        return decode
