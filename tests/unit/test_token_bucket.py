"""The token bucket and its bounded table, on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.rate_limit import KeyedBuckets, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_a_full_bucket_admits_its_capacity_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket.full(rate=2, capacity=3, now=0)
    assert [bucket.take(0) for _ in range(3)] == [0, 0, 0]
    # Empty: the next token comes after 1/rate seconds.
    assert bucket.take(0) == pytest.approx(0.5)
    assert bucket.take(0.25) == pytest.approx(0.25)
    assert bucket.take(0.5) == 0
    assert bucket.take(0.5) == pytest.approx(0.5)


def test_refill_never_exceeds_capacity() -> None:
    bucket = TokenBucket.full(rate=10, capacity=2, now=0)
    assert bucket.take(0) == 0
    assert bucket.take(0) == 0
    bucket.wait(3600)
    assert bucket.tokens == 2
    assert [bucket.take(3600) for _ in range(3)][2] > 0


def test_a_clock_that_steps_back_gives_no_tokens() -> None:
    bucket = TokenBucket.full(rate=1, capacity=1, now=10)
    assert bucket.take(10) == 0
    assert bucket.take(5) == pytest.approx(1.0)
    assert bucket.take(10.5) == pytest.approx(0.5)


def test_charge_empties_but_never_goes_below_empty() -> None:
    bucket = TokenBucket.full(rate=1, capacity=2, now=0)
    for _ in range(10):
        bucket.charge(0)
    assert bucket.tokens == 0
    # However many failures were charged, one second brings a token back.
    assert bucket.wait(1) == 0


def test_reshape_keeps_tokens_within_the_new_capacity() -> None:
    bucket = TokenBucket.full(rate=1, capacity=10, now=0)
    bucket.reshape(rate=5, capacity=3)
    assert bucket.tokens == 3
    for _ in range(3):
        assert bucket.take(0) == 0
    assert bucket.take(0) == pytest.approx(0.2)


@given(
    rate=st.floats(min_value=0.01, max_value=1e4),
    capacity=st.integers(min_value=1, max_value=1000),
    steps=st.lists(st.floats(min_value=0, max_value=10), min_size=1, max_size=200),
)
def test_admitted_requests_never_exceed_capacity_plus_rate_times_elapsed(
    rate: float, capacity: int, steps: list[float]
) -> None:
    bucket = TokenBucket.full(rate=rate, capacity=capacity, now=0)
    now = 0.0
    admitted = 0
    for step in steps:
        now += step
        waiting = bucket.take(now)
        if waiting == 0:
            admitted += 1
        else:
            assert waiting <= 1 / rate + 1e-9
        assert 0 <= bucket.tokens <= capacity
    assert admitted <= capacity + rate * now + 1e-6


def test_keyed_buckets_are_independent() -> None:
    clock = FakeClock()
    buckets = KeyedBuckets(10, clock=clock)
    assert buckets.take("a", 1, 1) == 0
    assert buckets.take("a", 1, 1) == pytest.approx(1.0)
    assert buckets.take("b", 1, 1) == 0
    clock.advance(1)
    assert buckets.take("a", 1, 1) == 0


def test_wait_creates_no_bucket_and_takes_nothing() -> None:
    clock = FakeClock()
    buckets = KeyedBuckets(10, clock=clock)
    assert buckets.wait("never-charged") == 0
    assert len(buckets) == 0
    buckets.charge("x", 0.5, 2)
    assert buckets.wait("x") == 0
    assert buckets.wait("x") == 0  # peeking is free
    buckets.charge("x", 0.5, 2)
    assert buckets.wait("x") == pytest.approx(2.0)
    clock.advance(2)
    assert buckets.wait("x") == 0


def test_the_table_is_bounded_and_drops_the_least_recently_used() -> None:
    clock = FakeClock()
    buckets = KeyedBuckets(3, clock=clock)
    for key in ("a", "b", "c"):
        buckets.take(key, 1, 1)
    buckets.take("a", 1, 1)  # a is now the most recently used (and empty)
    buckets.take("d", 1, 1)  # drops b
    assert len(buckets) == 3
    assert buckets.wait("b") == 0  # gone: no bucket
    assert buckets.wait("a") > 0  # kept
    for n in range(1000):
        buckets.take(f"flood-{n}", 1, 1)
    assert len(buckets) == 3


def test_a_new_rate_for_a_key_applies_at_once() -> None:
    clock = FakeClock()
    buckets = KeyedBuckets(10, clock=clock)
    assert buckets.take("k", 1, 1) == 0
    assert buckets.take("k", 1, 1) == pytest.approx(1.0)
    # The key's role changed: 4/s now.
    assert buckets.take("k", 4, 4) == pytest.approx(0.25)


def test_at_least_one_bucket() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        KeyedBuckets(0)
