"""Token buckets, one per key, in a bounded LRU table: the pure logic of the
per-key request limit and the failed-authentication limit (``api/request_limits.py``
wires them to settings and requests).

A bucket holds up to ``capacity`` tokens and gains ``rate`` a second; a
request takes one, and a bucket with less than one token makes the caller
wait until it has one again. Time comes from an injected clock (monotonic
seconds), so the arithmetic is tested without waiting.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Clock", "KeyedBuckets", "TokenBucket"]

Clock = Callable[[], float]


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens gained per second, > 0
    capacity: float  # most tokens held, >= 1
    tokens: float
    updated: float  # clock reading of the last refill

    @classmethod
    def full(cls, rate: float, capacity: float, now: float) -> TokenBucket:
        return cls(rate=rate, capacity=capacity, tokens=capacity, updated=now)

    def _refill(self, now: float) -> None:
        # A clock that stepped back (it should not: monotonic) gives nothing.
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def wait(self, now: float) -> float:
        """Seconds until a token is there; 0 if one is there now."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self, now: float) -> float:
        """Takes a token and returns 0, or takes nothing and returns the seconds
        until one is there."""
        waiting = self.wait(now)
        if waiting == 0:
            self.tokens -= 1
        return waiting

    def charge(self, now: float) -> None:
        """Takes a token whether there is one or not (never below empty): a
        failure already happened and is paid for."""
        self._refill(now)
        self.tokens = max(0.0, self.tokens - 1)

    def reshape(self, rate: float, capacity: float) -> None:
        """New limits (a key whose role changed) apply from now, tokens kept."""
        self.rate = rate
        self.capacity = capacity
        self.tokens = min(self.tokens, capacity)


class KeyedBuckets:
    """One bucket per key, at most ``max_buckets`` of them: past that the least
    recently used bucket is dropped (a dropped key starts again with a full
    bucket, which is what an idle key would have refilled to anyway), so a
    flood of distinct keys or addresses costs bounded memory.

    Thread-safe: async dependencies call it on the event loop and sync ones
    from the thread pool."""

    def __init__(self, max_buckets: int, clock: Clock = time.monotonic) -> None:
        if max_buckets < 1:
            raise ValueError("max_buckets must be at least 1")
        self._max = max_buckets
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, key: str, rate: float, capacity: float, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket.full(rate, capacity, now)
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            if (bucket.rate, bucket.capacity) != (rate, capacity):
                bucket.reshape(rate, capacity)
        return bucket

    def take(self, key: str, rate: float, capacity: float) -> float:
        """0 if ``key`` may go ahead (a token taken), else seconds to wait."""
        with self._lock:
            now = self._clock()
            return self._bucket(key, rate, capacity, now).take(now)

    def charge(self, key: str, rate: float, capacity: float) -> None:
        """Takes a token from ``key``'s bucket, even if that empties it."""
        with self._lock:
            now = self._clock()
            self._bucket(key, rate, capacity, now).charge(now)

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a token; 0 for a key without a bucket.
        Takes nothing and creates no bucket: checking is free for keys that
        never paid."""
        with self._lock:
            bucket = self._buckets.get(key)
            return 0.0 if bucket is None else bucket.wait(self._clock())
