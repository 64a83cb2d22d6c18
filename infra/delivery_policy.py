"""What an attempt's outcome means for its delivery and endpoint. Pure, so
the whole retry policy is unit-tested without a receiver or a database.

DESIGN.md: 2xx is success; anything else (3xx included: redirects are not
followed) is a failure retried on the schedule; 410 Gone disables the
endpoint; ``Retry-After`` is honoured (never sooner than it asks, bounded);
an endpoint failing with no success for ``disable_after`` is disabled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Final, Literal

__all__ = ["MAX_RETRY_AFTER", "Outcome", "Verdict", "judge", "parse_retry_after"]

# A receiver cannot park a delivery for longer than a day with Retry-After.
MAX_RETRY_AFTER: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None = None  # None: no answer (refused, timeout, connection error)
    error: str | None = None
    retry_after: float | None = None  # seconds, from the answer's Retry-After

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Literal["succeeded", "pending", "failed"]
    # Seconds until the next attempt, when pending.
    retry_in: float | None = None
    # Set when the endpoint must be disabled, with the reason recorded.
    disable_reason: str | None = None


def judge(
    outcome: Outcome,
    *,
    attempt: int,
    schedule: Sequence[float],
    failing_for: float | None,
    disable_after: float,
) -> Verdict:
    """``attempt``: this attempt's number in its round (1 is the first);
    ``failing_for``: seconds the endpoint has failed with no success between,
    counting this attempt (None when this attempt succeeded)."""
    if outcome.succeeded:
        return Verdict("succeeded")
    if outcome.status_code == 410:
        return Verdict("failed", disable_reason="the receiver answered 410 Gone")
    if failing_for is not None and failing_for >= disable_after:
        days = disable_after / 86_400
        return Verdict("failed", disable_reason=f"failing with no success for {days:g} days")
    if attempt >= len(schedule):
        return Verdict("failed")
    delay = schedule[attempt]
    if outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, MAX_RETRY_AFTER))
    return Verdict("pending", retry_in=delay)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max((when - now) / timedelta(seconds=1), 0.0)
