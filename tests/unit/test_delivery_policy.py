"""The retry policy (infra.delivery_policy), exhaustively: what each answer
means for the delivery and its endpoint, and how Retry-After is read."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.delivery_policy import MAX_RETRY_AFTER, Outcome, Verdict, judge, parse_retry_after

SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0)
DAY = 86_400.0
DISABLE_AFTER = 5 * DAY
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

# Every answer that is not a success, and no answer at all.
FAILURES = [
    pytest.param(Outcome(300), id="300"),
    pytest.param(Outcome(301), id="301 (redirects are not followed)"),
    pytest.param(Outcome(302), id="302"),
    pytest.param(Outcome(304), id="304"),
    pytest.param(Outcome(399), id="399"),
    pytest.param(Outcome(400), id="400"),
    pytest.param(Outcome(401), id="401"),
    pytest.param(Outcome(404), id="404"),
    pytest.param(Outcome(409), id="409"),
    pytest.param(Outcome(429), id="429"),
    pytest.param(Outcome(499), id="499"),
    pytest.param(Outcome(500), id="500"),
    pytest.param(Outcome(502), id="502"),
    pytest.param(Outcome(503), id="503"),
    pytest.param(Outcome(599), id="599"),
    pytest.param(Outcome(None, "no answer within 15 s"), id="timeout"),
    pytest.param(Outcome(None, "ConnectError: refused"), id="connection error"),
    pytest.param(Outcome(None, "refused: 10.0.0.1 is a private address"), id="ssrf refusal"),
]


def verdict(
    outcome: Outcome,
    attempt: int,
    *,
    failing_for: float | None = 1.0,
    schedule: tuple[float, ...] = SCHEDULE,
    disable_after: float = DISABLE_AFTER,
) -> Verdict:
    return judge(
        outcome,
        attempt=attempt,
        schedule=schedule,
        failing_for=failing_for,
        disable_after=disable_after,
    )


# -- judge ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
@pytest.mark.parametrize("attempt", range(1, len(SCHEDULE) + 2))
def test_a_2xx_answer_succeeds_at_any_attempt(status: int, attempt: int) -> None:
    assert verdict(Outcome(status), attempt, failing_for=None) == Verdict("succeeded")
    # Retry-After on a success changes nothing.
    assert verdict(Outcome(status, retry_after=60), attempt, failing_for=None) == Verdict(
        "succeeded"
    )


@pytest.mark.parametrize("outcome", FAILURES)
@pytest.mark.parametrize("attempt", range(1, len(SCHEDULE)))
def test_a_failure_is_retried_on_the_schedule(outcome: Outcome, attempt: int) -> None:
    """Attempt k (1-based) failed: the next one waits schedule[k]."""
    assert verdict(outcome, attempt) == Verdict("pending", retry_in=SCHEDULE[attempt])


@pytest.mark.parametrize("outcome", FAILURES)
def test_the_last_attempt_fails_for_good(outcome: Outcome) -> None:
    last = len(SCHEDULE)
    assert verdict(outcome, last) == Verdict("failed")
    assert verdict(outcome, last + 1) == Verdict("failed")  # e.g. a resent round ran over
    # Retry-After does not buy another attempt.
    assert verdict(Outcome(outcome.status_code, retry_after=1), last) == Verdict("failed")


def test_the_whole_default_schedule() -> None:
    schedule = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18_000.0, 36_000.0, 36_000.0)
    delays = [verdict(Outcome(500), k, schedule=schedule).retry_in for k in range(1, 8)]
    assert delays == [5.0, 300.0, 1800.0, 7200.0, 18_000.0, 36_000.0, 36_000.0]
    assert verdict(Outcome(500), 8, schedule=schedule) == Verdict("failed")


def test_a_single_attempt_schedule_never_retries() -> None:
    assert verdict(Outcome(500), 1, schedule=(0.0,)) == Verdict("failed")


@pytest.mark.parametrize("attempt", range(1, len(SCHEDULE) + 2))
@pytest.mark.parametrize("failing_for", [None, 0.0, 1.0, DISABLE_AFTER * 2])
def test_410_disables_at_once_whatever_the_attempt(attempt: int, failing_for: float) -> None:
    found = verdict(Outcome(410, retry_after=5), attempt, failing_for=failing_for)
    assert found.status == "failed"
    assert found.retry_in is None
    assert found.disable_reason is not None
    assert "410" in found.disable_reason


@pytest.mark.parametrize("outcome", FAILURES)
@pytest.mark.parametrize("attempt", range(1, len(SCHEDULE) + 1))
def test_failing_for_disable_after_disables(outcome: Outcome, attempt: int) -> None:
    for failing_for in (DISABLE_AFTER, DISABLE_AFTER + 1, DISABLE_AFTER * 10):
        found = verdict(outcome, attempt, failing_for=failing_for)
        assert found.status == "failed"
        assert found.retry_in is None
        assert found.disable_reason == "failing with no success for 5 days"


def test_the_disable_reason_names_the_configured_time() -> None:
    found = verdict(Outcome(500), 1, failing_for=DAY / 2, disable_after=DAY / 2)
    assert found.disable_reason == "failing with no success for 0.5 days"


@pytest.mark.parametrize("outcome", FAILURES)
def test_failing_for_just_under_disable_after_keeps_retrying(outcome: Outcome) -> None:
    found = verdict(outcome, 1, failing_for=DISABLE_AFTER - 0.001)
    assert found == Verdict("pending", retry_in=SCHEDULE[1])


def test_a_success_never_disables_whatever_failing_for_says() -> None:
    assert verdict(Outcome(200), 1, failing_for=DISABLE_AFTER * 2) == Verdict("succeeded")


@pytest.mark.parametrize("status", [429, 500, 503, 301, None])
def test_retry_after_raises_the_delay(status: int | None) -> None:
    # schedule[1] is 5 s: Retry-After 60 asks for longer, and gets it.
    assert verdict(Outcome(status, retry_after=60), 1).retry_in == 60
    assert verdict(Outcome(status, retry_after=5.5), 1).retry_in == 5.5


@pytest.mark.parametrize("retry_after", [0.0, 1.0, 4.999, 5.0])
def test_retry_after_never_lowers_the_delay(retry_after: float) -> None:
    assert verdict(Outcome(503, retry_after=retry_after), 1).retry_in == 5.0
    assert verdict(Outcome(503, retry_after=retry_after), 2).retry_in == 300.0


@pytest.mark.parametrize("retry_after", [MAX_RETRY_AFTER, MAX_RETRY_AFTER + 1, 10 * DAY, math.inf])
def test_retry_after_is_capped(retry_after: float) -> None:
    assert verdict(Outcome(503, retry_after=retry_after), 1).retry_in == MAX_RETRY_AFTER


def test_the_cap_does_not_lower_a_longer_scheduled_delay() -> None:
    schedule = (0.0, 2 * MAX_RETRY_AFTER)
    found = verdict(Outcome(503, retry_after=10 * DAY), 1, schedule=schedule)
    assert found.retry_in == 2 * MAX_RETRY_AFTER


@given(
    status=st.one_of(st.none(), st.integers(min_value=100, max_value=599)),
    retry_after=st.one_of(
        st.none(),
        st.floats(min_value=0, allow_nan=False, allow_infinity=True),
    ),
    schedule=st.lists(
        st.floats(min_value=0, max_value=1e9, allow_nan=False), min_size=1, max_size=10
    ),
    attempt=st.integers(min_value=1, max_value=12),
    failing_for=st.one_of(st.none(), st.floats(min_value=0, max_value=1e9, allow_nan=False)),
    disable_after=st.floats(min_value=1e-3, max_value=1e9, allow_nan=False),
)
def test_the_verdict_is_pending_with_a_delay_or_final(
    *,
    status: int | None,
    retry_after: float | None,
    schedule: list[float],
    attempt: int,
    failing_for: float | None,
    disable_after: float,
) -> None:
    outcome = Outcome(status, None if status is not None else "no answer", retry_after)
    found = judge(
        outcome,
        attempt=attempt,
        schedule=schedule,
        failing_for=None if outcome.succeeded else failing_for,
        disable_after=disable_after,
    )
    if found.status == "pending":
        assert found.retry_in is not None
        assert math.isfinite(found.retry_in)
        assert found.retry_in >= 0
        assert found.retry_in >= schedule[attempt]  # never sooner than scheduled
        assert found.retry_in <= max(schedule[attempt], MAX_RETRY_AFTER)
        assert found.disable_reason is None
        assert attempt < len(schedule)
    else:
        assert found.status in ("succeeded", "failed")
        assert found.retry_in is None
        assert found.status == "succeeded" or not outcome.succeeded
    if found.disable_reason is not None:
        assert found.status == "failed"


# -- parse_retry_after ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("0", 0.0), ("1", 1.0), ("120", 120.0), (" 30 ", 30.0), ("86400", 86_400.0)],
)
def test_delta_seconds(header: str, seconds: float) -> None:
    assert parse_retry_after(header) == seconds


def test_a_huge_delta_parses_and_judge_caps_it() -> None:
    seconds = parse_retry_after("9" * 30)
    assert seconds is not None
    assert seconds > MAX_RETRY_AFTER
    assert verdict(Outcome(503, retry_after=seconds), 1).retry_in == MAX_RETRY_AFTER


def test_an_http_date_in_the_future_is_the_seconds_until_it() -> None:
    header = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(header, now=NOW) == 90.0
    assert parse_retry_after("Sun, 01 Mar 2026 12:02:00 GMT", now=NOW) == 120.0


def test_an_http_date_without_a_zone_is_taken_as_utc() -> None:
    assert parse_retry_after("Sun, 01 Mar 2026 12:01:00 -0000", now=NOW) == 60.0


@pytest.mark.parametrize(
    "header",
    [
        "Sun, 01 Mar 2026 11:59:59 GMT",
        "Wed, 21 Oct 2015 07:28:00 GMT",
        format_datetime(NOW, usegmt=True),  # exactly now
    ],
)
def test_an_http_date_in_the_past_gives_zero(header: str) -> None:
    assert parse_retry_after(header, now=NOW) == 0.0


@pytest.mark.parametrize(
    "header",
    [None, "", "   ", "soon", "-5", "1.5", "1e3", "0x10", "5 seconds", "tomorrow", "NaN",
     "Sun, 32 Mar 2026 12:00:00 GMT", "Mon, 01 Jan 99999 00:00:00 GMT"],
)  # fmt: skip
def test_garbage_gives_none(header: str | None) -> None:
    assert parse_retry_after(header, now=NOW) is None


def test_non_ascii_digits_are_garbage() -> None:
    # str.isdigit() admits '²' (a header byte 0xB2 decoded as latin-1); float() does not.
    assert parse_retry_after("²") is None


@given(st.text(max_size=40))
def test_any_header_gives_none_or_a_non_negative_delay(header: str) -> None:
    seconds = parse_retry_after(header, now=NOW)
    assert seconds is None or seconds >= 0
