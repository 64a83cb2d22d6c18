"""The email sender (infra.email_sender, infra.email_outbox) against real
PostgreSQL and a real SMTP server on loopback (tests/smtp_server.py):
sending and recording, the SMTP server going away and coming back, retries
running out, permanent refusals, credentials, several senders on one
outbox, and leases of a sender that died.

Emails are put in the outbox as the notification consumer does (a row due
now and a NOTIFY), so the tests do not depend on the consumer or NATS.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from infra import email_outbox
from infra.db import PostgresTarget
from infra.email_outbox import Attempt
from infra.email_sender import EmailSender
from infra.settings import Settings
from tests.smtp_server import free_port, smtp_server
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

TEAM = uuid.UUID("7e000000-0000-4000-8000-000000000001")
FAST = [0.0] + [0.2] * 60  # retries every 0.2 s, for a dozen seconds


def mail_settings(settings: Settings, port: int, **update: Any) -> Settings:
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_timeout": 5.0,
        "email_claim_lease": 10.0,
        "email_retry_schedule": FAST,
        "email_from": "Chronik <chronik@example.test>",
        "email_concurrency": 4,
    }
    values.update(update)
    return settings.model_copy(update=values)


def conninfo(settings: Settings) -> str:
    return PostgresTarget.from_url(settings.database_url_value()).conninfo()


@asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[AsyncConnection[Any]]:
    async with await AsyncConnection.connect(conninfo(settings), autocommit=True) as conn:
        yield conn


@asynccontextmanager
async def running_sender(settings: Settings) -> AsyncIterator[EmailSender]:
    pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
        conninfo(settings), min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
    )
    await pool.open()
    stopping = asyncio.Event()
    sender = EmailSender(settings, pool, conninfo(settings), poll_interval=0.5)
    task = asyncio.create_task(sender.run(stopping))
    try:
        yield sender
    finally:
        stopping.set()
        await asyncio.wait_for(task, timeout=15)
        await pool.close()


async def enqueue(
    settings: Settings, count: int = 1, *, with_notification: bool = False, subject: str = "Hi"
) -> list[int]:
    """``count`` emails due now, as the consumer writes them (a NOTIFY wakes
    the senders on commit)."""
    ids = []
    async with connected(settings) as conn, conn.transaction():
        for n in range(count):
            user = uuid.uuid4()
            notification_id = None
            if with_notification:
                cur = await conn.execute(
                    "INSERT INTO notifications (team_id, user_id, kind, position, event_id,"
                    " title, body, data) VALUES (%s, %s, 'entry.shared', %s, %s, %s, 'b', '{}')"
                    " RETURNING id",
                    (TEAM, user, 1000 + n, f"evt-{n}", subject),
                )
                row = await cur.fetchone()
                assert row is not None
                notification_id = row[0]
            cur = await conn.execute(
                "INSERT INTO email_outbox (team_id, user_id, notification_id, to_address,"
                " subject, body) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    TEAM,
                    user,
                    notification_id,
                    f"member{n}@example.test",
                    f"{subject} {n}",
                    f"Body of email {n}.\nSecond line.",
                ),
            )
            row = await cur.fetchone()
            assert row is not None
            ids.append(int(row[0]))
        await email_outbox.announce(conn)
    return ids


async def outbox(settings: Settings) -> list[dict[str, Any]]:
    async with connected(settings) as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM email_outbox ORDER BY id")
        return await cur.fetchall()


async def attempts(settings: Settings, email_id: int) -> list[dict[str, Any]]:
    async with connected(settings) as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT * FROM email_attempts WHERE email_id = %s ORDER BY attempt", (email_id,)
        )
        return await cur.fetchall()


async def statuses(settings: Settings) -> list[str]:
    return [row["status"] for row in await outbox(settings)]


async def test_a_pending_email_is_sent_and_recorded(settings: Settings) -> None:
    with smtp_server() as server:
        config = mail_settings(settings, server.port)
        async with running_sender(config):
            (email_id,) = await enqueue(config, with_notification=True)

            async def sent() -> bool:
                return await statuses(config) == ["sent"]

            await eventually(sent, what="the email being sent")
        (received,) = server.messages()
    assert received.rcpt_tos == ["member0@example.test"]
    assert received.mail_from == "chronik@example.test"
    assert received.message["From"] == "Chronik <chronik@example.test>"
    assert received.message["To"] == "member0@example.test"
    assert received.message["Subject"] == "Hi 0"
    assert received.message_id == f"<chronik-email-{email_id}@example.test>"
    assert (
        received.message.get_content().replace("\r\n", "\n") == "Body of email 0.\nSecond line.\n"
    )
    (row,) = await outbox(config)
    assert (row["attempts"], row["last_error"]) == (1, None)
    assert row["sent_at"] is not None
    (attempt,) = await attempts(config, email_id)
    assert (attempt["attempt"], attempt["outcome"], attempt["error"]) == (1, "sent", None)


async def test_smtp_down_emails_are_retried_and_sent_when_it_returns(settings: Settings) -> None:
    with smtp_server() as server:
        config = mail_settings(settings, server.port)
        async with running_sender(config):
            (_first,) = await enqueue(config, with_notification=True)

            async def first_sent() -> bool:
                return len(server.messages()) == 1

            await eventually(first_sent, what="the first email")
            await asyncio.to_thread(server.stop)  # the SMTP server goes away
            (second,) = await enqueue(config, with_notification=True, subject="Later")

            async def failing() -> bool:
                return len(await attempts(config, second)) >= 3

            await eventually(failing, what="three failed attempts")
            async with connected(config) as conn:
                cur = await conn.execute("SELECT count(*), count(read_at) FROM notifications")
                assert await cur.fetchone() == (2, 0)  # the inbox is untouched
            await asyncio.to_thread(server.start)  # back, on the same port

            async def both_sent() -> bool:
                return await statuses(config) == ["sent", "sent"]

            await eventually(both_sent, what="the email being sent after the server returned")
    subjects = [r.message["Subject"] for r in server.messages()]
    assert subjects == ["Hi 0", "Later 0"]  # each once
    tried = await attempts(config, second)
    assert [a["outcome"] for a in tried] == ["failed"] * (len(tried) - 1) + ["sent"]
    assert [a["attempt"] for a in tried] == list(range(1, len(tried) + 1))
    assert all("Connect" in a["error"] or "refused" in a["error"] for a in tried[:-1])
    gaps = [
        (b["started_at"] - a["started_at"]).total_seconds() for a, b in itertools.pairwise(tried)
    ]
    assert all(gap >= 0.15 for gap in gaps)  # the schedule's 0.2 s between attempts
    assert (await outbox(config))[1]["attempts"] == len(tried)


async def test_retries_exhausted_mark_the_email_failed(settings: Settings) -> None:
    with smtp_server() as server:
        server.refuse("451 4.3.0 Try again later")
        config = mail_settings(settings, server.port, email_retry_schedule=[0.0, 0.1, 0.1])
        async with running_sender(config):
            (email_id,) = await enqueue(config)

            async def failed() -> bool:
                return await statuses(config) == ["failed"]

            await eventually(failed, what="the email being given up")
    assert server.messages() == []
    assert server.refused == 3
    (row,) = await outbox(config)
    assert row["attempts"] == 3
    assert "451" in row["last_error"]
    assert [a["outcome"] for a in await attempts(config, email_id)] == ["failed"] * 3


async def test_a_temporary_refusal_is_retried(settings: Settings) -> None:
    with smtp_server() as server:
        server.refuse("421 4.7.0 Slow down", times=2)
        config = mail_settings(settings, server.port)
        async with running_sender(config):
            (email_id,) = await enqueue(config)

            async def sent() -> bool:
                return await statuses(config) == ["sent"]

            await eventually(sent, what="the email being sent")
    assert len(server.messages()) == 1
    tried = await attempts(config, email_id)
    assert [a["outcome"] for a in tried] == ["failed", "failed", "sent"]
    assert "421" in tried[0]["error"]


async def test_a_permanent_refusal_fails_at_once(settings: Settings) -> None:
    with smtp_server() as server:
        server.refuse_recipients("550 5.1.1 No such user here")
        config = mail_settings(settings, server.port)
        async with running_sender(config):
            (email_id,) = await enqueue(config)

            async def failed() -> bool:
                return await statuses(config) == ["failed"]

            await eventually(failed, what="the email failing")
    (attempt,) = await attempts(config, email_id)
    assert "550" in attempt["error"]


async def test_credentials_are_used_and_the_password_never_recorded(
    settings: Settings, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    password = "pw-" + uuid.uuid4().hex
    wrong = "wrong-" + uuid.uuid4().hex
    with smtp_server(credentials=("chronik", password)) as server:
        bad = mail_settings(
            settings,
            server.port,
            smtp_username="chronik",
            smtp_password=SecretStr(wrong),
            email_retry_schedule=[0.0],
        )
        async with running_sender(bad):
            (refused,) = await enqueue(bad)

            async def failed() -> bool:
                return await statuses(bad) == ["failed"]

            await eventually(failed, what="the login being refused")
        good = mail_settings(
            settings, server.port, smtp_username="chronik", smtp_password=SecretStr(password)
        )
        async with running_sender(good):
            await enqueue(good)

            async def sent() -> bool:
                return await statuses(good) == ["failed", "sent"]

            await eventually(sent, what="the email being sent with the right login")
    assert set(server.logins) == {("chronik", wrong), ("chronik", password)}
    assert server.logins[-1] == ("chronik", password)
    assert len(server.messages()) == 1
    (attempt,) = await attempts(bad, refused)
    assert "535" in attempt["error"] or "Authentication" in attempt["error"]
    out = capsys.readouterr()
    for text in (attempt["error"], out.out, out.err, caplog.text):
        assert password not in text
        assert wrong not in text


async def test_two_senders_never_send_an_email_twice(settings: Settings) -> None:
    with smtp_server() as server:
        config = mail_settings(settings, server.port, email_concurrency=3)
        async with running_sender(config), running_sender(config):
            ids = await enqueue(config, 40)

            async def all_sent() -> bool:
                return await statuses(config) == ["sent"] * 40

            await eventually(all_sent, what="all 40 emails being sent", within=60)
    ids_seen = [r.message_id for r in server.messages()]
    assert len(ids_seen) == 40
    assert len(set(ids_seen)) == 40
    assert all(row["attempts"] == 1 for row in await outbox(config))
    for email_id in ids:
        assert len(await attempts(config, email_id)) == 1


async def test_a_dead_senders_claim_comes_due_after_its_lease(settings: Settings) -> None:
    with smtp_server() as server:
        config = mail_settings(settings, server.port)
        (email_id,) = await enqueue(config)
        lease = 2.0
        async with connected(config) as conn:
            # A sender that claims the email and dies before sending it.
            (dead,) = await email_outbox.claim_due(conn, limit=10, lease=lease)
        claimed_at = asyncio.get_running_loop().time()
        async with running_sender(config):

            async def sent() -> bool:
                return len(server.messages()) == 1

            await eventually(sent, what="the email being sent after the lease")
            waited = asyncio.get_running_loop().time() - claimed_at
            assert waited >= lease - 0.2  # not before the lease ran out

            async def recorded() -> bool:
                return await statuses(config) == ["sent"]

            await eventually(recorded, what="the send being recorded")
    assert dead.attempts == 1
    tried = await attempts(config, email_id)
    assert [(a["attempt"], a["outcome"]) for a in tried] == [(2, "sent")]


async def test_a_superseded_failure_records_no_outcome(settings: Settings) -> None:
    config = mail_settings(settings, free_port())
    (email_id,) = await enqueue(config)
    async with connected(config) as conn:
        (stale,) = await email_outbox.claim_due(conn, limit=10, lease=0.0)
        (live,) = await email_outbox.claim_due(conn, limit=10, lease=60.0)
        failure = Attempt(stale_started := (await _now(conn)), 5, "SMTPConnectError: gone")
        assert await email_outbox.record_attempt(conn, stale, failure, FAST) is None
        (row,) = await outbox(config)
        assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 2, None)
        # A success is final whichever claim it came from.
        success = Attempt(stale_started, 5, None)
        decision = await email_outbox.record_attempt(conn, live, success, FAST)
        assert decision is not None
        assert decision.status == "sent"
    assert [(a["attempt"], a["outcome"]) for a in await attempts(config, email_id)] == [
        (1, "failed"),
        (2, "sent"),
    ]
    assert await statuses(config) == ["sent"]


async def test_counts_for_metrics(settings: Settings) -> None:
    config = mail_settings(settings, free_port())
    await enqueue(config, 3)
    async with connected(config) as conn:
        (claim, *_) = await email_outbox.claim_due(conn, limit=1, lease=60.0)
        now = await _now(conn)
        await email_outbox.record_attempt(conn, claim, Attempt(now, 1, None), FAST)
        counts = await email_outbox.counts(conn)
    assert (counts.pending, counts.sent, counts.failed) == (2, 1, 0)
    assert counts.oldest_due_seconds >= 0


async def _now(conn: AsyncConnection[Any]) -> Any:
    cur = await conn.execute("SELECT now()")
    row = await cur.fetchone()
    assert row is not None
    return row[0]


REFUSE_CLAIMS = """
CREATE SEQUENCE refusals;
CREATE FUNCTION refuse_claims() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('refusals');  -- not rolled back: counts the refusals
    RAISE EXCEPTION 'refused for the test' USING ERRCODE = 'internal_error';
END $$;
CREATE TRIGGER refuse_claims BEFORE UPDATE ON email_outbox
    FOR EACH ROW EXECUTE FUNCTION refuse_claims();
"""


async def test_a_database_that_refuses_is_retried_and_the_sender_keeps_running(
    settings: Settings,
) -> None:
    """Not only a lost connection: an InternalError (a failover, say) or any
    other psycopg.Error must not end run(), and so the fan-out with it."""
    with smtp_server() as server:
        config = mail_settings(settings, server.port)
        (email_id,) = await enqueue(config)
        async with connected(config) as conn:
            await conn.execute(REFUSE_CLAIMS)  # every claim now fails with InternalError
        pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
            conninfo(config), min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
        )
        await pool.open()
        stopping = asyncio.Event()
        sender = EmailSender(config, pool, conninfo(config), poll_interval=0.5)
        task = asyncio.create_task(sender.run(stopping))
        try:

            async def refused_twice() -> bool:
                async with connected(config) as conn:
                    cur = await conn.execute(
                        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM refusals"
                    )
                    row = await cur.fetchone()
                return (row is not None and row[0] >= 2) or task.done()

            await eventually(refused_twice, what="the claims being refused")
            assert not task.done(), task.exception()  # backed off, did not give up
            async with connected(config) as conn:
                await conn.execute("DROP TRIGGER refuse_claims ON email_outbox")

            async def sent() -> bool:
                return await statuses(config) == ["sent"] or task.done()

            await eventually(sent, what="the email being sent once the database accepts")
            assert not task.done()
        finally:
            stopping.set()
            await asyncio.wait_for(task, timeout=15)
            await pool.close()
    assert len(server.messages()) == 1
    assert [a["outcome"] for a in await attempts(config, email_id)] == ["sent"]
