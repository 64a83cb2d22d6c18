"""Email policy without servers: retries, failure descriptions, messages,
the digest's day and text."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiosmtplib
import psycopg
import pytest

from infra.digests import DigestItem, DigestJob, compose_digest, digest_day_due
from infra.email_outbox import Attempt, Claim, Decision, decide
from infra.email_sender import build_message, describe_failure
from infra.scheduler import ScheduledJob
from infra.settings import SettingsError, load_settings

NOW = datetime(2030, 1, 10, 12, tzinfo=UTC)
SCHEDULE = [0.0, 30.0, 120.0]


def failed(*, permanent: bool = False) -> Attempt:
    return Attempt(NOW, 10, "451 try later", permanent=permanent)


def test_retries_follow_the_schedule_then_give_up() -> None:
    assert decide(failed(), number=1, schedule=SCHEDULE) == Decision("pending", 30.0)
    assert decide(failed(), number=2, schedule=SCHEDULE) == Decision("pending", 120.0)
    assert decide(failed(), number=3, schedule=SCHEDULE) == Decision("failed")
    assert decide(Attempt(NOW, 10, None), number=3, schedule=SCHEDULE) == Decision("sent")
    assert decide(failed(permanent=True), number=1, schedule=SCHEDULE) == Decision("failed")


def test_only_refusals_of_recipient_or_message_with_5xx_are_permanent() -> None:
    rcpt = aiosmtplib.SMTPRecipientRefused(550, "No such user", "x@example.test")
    assert describe_failure(rcpt) == ("recipient refused: 550 No such user", True)
    assert describe_failure(aiosmtplib.SMTPRecipientsRefused([rcpt]))[1] is True
    assert describe_failure(aiosmtplib.SMTPDataError(554, "Spam"))[1] is True
    assert describe_failure(aiosmtplib.SMTPDataError(451, "Later"))[1] is False
    assert describe_failure(aiosmtplib.SMTPAuthenticationError(535, "Bad login"))[1] is False
    assert describe_failure(aiosmtplib.SMTPSenderRefused(550, "No", "me@x"))[1] is False
    assert describe_failure(ConnectionRefusedError(111, "Connection refused"))[1] is False
    assert describe_failure(TimeoutError()) == ("the SMTP server did not answer in time", False)


def claim(**update: object) -> Claim:
    values: dict[str, object] = {
        "id": 7,
        "team_id": uuid.uuid4(),
        "user_id": uuid.uuid4(),
        "to_address": "ada@example.test",
        "subject": "Entry shared",
        "body": "Body",
        "attempts": 1,
    }
    values.update(update)
    return Claim(**values)  # type: ignore[arg-type]


def test_the_message_is_plain_text_with_a_stable_id() -> None:
    settings = load_settings(email_from="Chronik <chronik@example.test>")
    message = build_message(settings, claim())
    assert message["From"] == "Chronik <chronik@example.test>"
    assert message["To"] == "ada@example.test"
    assert message["Message-ID"] == "<chronik-email-7@example.test>"
    assert message.get_content_type() == "text/plain"
    assert build_message(settings, claim())["Message-ID"] == message["Message-ID"]


def test_a_header_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="linefeed"):
        build_message(load_settings(), claim(subject="Hi\nBcc: someone@example.test"))


def test_tls_and_starttls_together_are_refused() -> None:
    with pytest.raises(SettingsError, match="exclude each other"):
        load_settings(smtp_tls=True, smtp_starttls=True)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2030, 1, 10, 7, 59, tzinfo=UTC), None),  # yesterday's is past the grace
        (datetime(2030, 1, 10, 8, 0, tzinfo=UTC), date(2030, 1, 10)),
        (datetime(2030, 1, 10, 14, 0, tzinfo=UTC), date(2030, 1, 10)),
        (datetime(2030, 1, 10, 14, 1, tzinfo=UTC), None),
        (datetime(2030, 1, 11, 1, 0, tzinfo=UTC), None),
    ],
)
def test_the_day_whose_digest_is_due(now: datetime, expected: date | None) -> None:
    assert digest_day_due(now, 8, timedelta(hours=6)) == expected


def test_the_day_is_taken_in_utc() -> None:
    tokyo = datetime(2030, 1, 11, 2, 0, tzinfo=UTC).astimezone()  # any zone, same instant
    assert digest_day_due(tokyo, 1, timedelta(hours=6)) == date(2030, 1, 11)
    assert digest_day_due(NOW, 23, timedelta(days=1)) == date(2030, 1, 9)


def test_the_digest_lists_its_items_and_says_how_many_more() -> None:
    items = [DigestItem("entry.shared", f"Entry {n}", "Line one\nLine two", NOW) for n in range(2)]
    subject, body = compose_digest(date(2030, 1, 10), "Ada", items, total=5)
    assert subject == "Your Chronik digest for 2030-01-10: 5 new notifications"
    assert "- [2030-01-10 12:00 UTC] Entry 1" in body
    assert "    Line two" in body
    assert "... and 3 more in your inbox." in body
    assert compose_digest(date(2030, 1, 10), "Ada", items[:1], 1)[0].endswith("1 new notification")


def test_the_digest_job_fits_the_scheduler() -> None:
    def no_database() -> psycopg.Connection[Any]:
        raise AssertionError("not before the digest time")

    job: ScheduledJob = DigestJob(load_settings(digest_hour=8), no_database)
    assert job.name == "email-digests"
    job.tick(datetime(2030, 1, 10, 7, 0, tzinfo=UTC))  # before 08:00: nothing to do
