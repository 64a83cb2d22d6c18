"""The email sender: sends due emails from the outbox over SMTP and records
every attempt.

Several senders (in one or many processes) share the outbox: each claims due
emails with ``FOR UPDATE SKIP LOCKED`` (see ``infra.email_outbox``), sends up
to ``email_concurrency`` at once with aiosmtplib (one SMTP session per email),
and records the outcome (a process that dies mid-send records nothing: the
claim expires and the email comes due again). A NOTIFY on
``email_outbox.DUE_CHANNEL`` wakes it at once; otherwise it looks again when
the next email comes due, or every ``poll_interval`` seconds. It survives the
database and the SMTP server going away: a failed send is retried per
``email_retry_schedule``, a lost or refusing database (any ``psycopg.Error``)
is logged and retried with backoff, and an outcome that cannot be recorded
leaves the claim to expire and the email to come due again.

Every copy of an email carries the same ``Message-ID`` (derived from its
outbox id), so a mail client can recognise the rare repeat (a sender that
died after the server accepted the email but before recording it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Final

import aiosmtplib
import psycopg
import structlog
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout, TooManyRequests

from infra import email_outbox
from infra.due_listener import listen_for_due
from infra.email_outbox import Attempt, Claim
from infra.settings import Settings
from infra.waiting import first_of

__all__ = ["EmailSender", "build_message", "describe_failure"]

log = structlog.get_logger(__name__)

# Whatever the database or the pool can raise: a lost connection, but also an
# InternalError during a failover, a ProgrammingError or a refusal (a
# permission, a trigger). The loops log it and back off; none of it may end
# ``run()``, which would end the fan-out's other parts with it.
_DATABASE_ERRORS: Final = (psycopg.Error, PoolTimeout, PoolClosed, TooManyRequests)
ERROR_CHARS: Final = 1000
REDACTED: Final = "[REDACTED]"


def build_message(settings: Settings, claim: Claim) -> EmailMessage:
    """A plain-text message; raises ValueError for an address or subject that
    cannot be a header (a line break, say)."""
    message = EmailMessage()
    message["From"] = settings.email_from
    message["To"] = claim.to_address
    message["Subject"] = claim.subject
    message["Date"] = formatdate(usegmt=True)
    domain = settings.email_from.rpartition("@")[2].strip("<> ") or "localhost"
    message["Message-ID"] = f"<chronik-email-{claim.id}@{domain}>"
    message.set_content(claim.body)
    return message


def describe_failure(exc: BaseException) -> tuple[str, bool]:
    """What went wrong, for the attempt's record, and whether it is permanent:
    only a 5xx refusal of the recipient or of the message is (a 4xx, a lost
    connection, a timeout, or a refusal of our own login or sender address,
    which an operator can fix, are retried)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refused.code for refused in exc.recipients]
        text = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        return f"recipient refused: {text}", bool(codes) and all(c >= 500 for c in codes)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError):
        what = "recipient refused" if isinstance(exc, aiosmtplib.SMTPRecipientRefused) else "data"
        return f"{what}: {exc.code} {exc.message}", exc.code >= 500
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{type(exc).__name__}: {exc.code} {exc.message}", False
    if isinstance(exc, TimeoutError):
        return "the SMTP server did not answer in time", False
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__), False


class EmailSender:
    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool[AsyncConnection[Any]],
        conninfo: str,
        *,
        poll_interval: float = 1.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        """``tls_context``: the context TLS and STARTTLS verify the server
        with (default: the system's trust store, certificates verified)."""
        self._settings = settings
        self._pool = pool
        self._conninfo = conninfo
        self._poll_interval = poll_interval
        self._tls_context = tls_context
        self._inflight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        password = settings.smtp_password
        self._password = password.get_secret_value() if password is not None else None
        if settings.email_claim_lease <= settings.smtp_timeout:
            log.warning(
                "email claim lease is not longer than the SMTP timeout: a slow send may be "
                "sent twice",
                lease=settings.email_claim_lease,
                timeout=settings.smtp_timeout,
            )

    async def run(self, stopping: asyncio.Event) -> None:
        listener = asyncio.create_task(
            listen_for_due(
                self._conninfo,
                email_outbox.DUE_CHANNEL,
                wake=self._wake,
                stopping=stopping,
                application_name="chronik-email",
            ),
            name="email-listener",
        )
        try:
            await self._claim_and_send(stopping)
            if self._inflight:  # finish what was started: its claims are ours
                await asyncio.wait(self._inflight, timeout=self._settings.smtp_timeout + 1)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            for task in list(self._inflight):  # outlived the wait: its claim expires
                task.cancel()

    async def _claim_and_send(self, stopping: asyncio.Event) -> None:
        delay = 0.5
        while not stopping.is_set():
            self._wake.clear()
            free = self._settings.email_concurrency - len(self._inflight)
            claimed: list[Claim] = []
            try:
                if free > 0:
                    async with self._pool.connection() as conn:
                        claimed = await email_outbox.claim_due(
                            conn, limit=free, lease=self._settings.email_claim_lease
                        )
                    for claim in claimed:
                        self._start(claim, stopping)
                wait = await self._seconds_to_wait(claimed, free)
                delay = 0.5
            except (OSError, *_DATABASE_ERRORS) as exc:
                log.warning(
                    "email sender cannot use the database; retrying",
                    error=str(exc),
                    error_type=type(exc).__name__,
                )
                wait, delay = delay, min(delay * 2, 5.0)
            if wait > 0:
                await first_of(stopping, self._wake, within=wait)

    async def _seconds_to_wait(self, claimed: list[Claim], free: int) -> float:
        if free <= 0 or (claimed and len(claimed) == free):
            return self._poll_interval  # slots full: a finished send wakes us
        if claimed:
            return 0.0  # there may be more due
        async with self._pool.connection() as conn:
            due_in = await email_outbox.seconds_until_due(conn)
        if due_in is None:
            return self._poll_interval
        return max(0.0, min(due_in, self._poll_interval))

    def _start(self, claim: Claim, stopping: asyncio.Event) -> None:
        task = asyncio.create_task(self._deliver(claim, stopping), name=f"email-{claim.id}")
        self._inflight.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._inflight.discard(finished)
            self._wake.set()

        task.add_done_callback(done)

    async def _deliver(self, claim: Claim, stopping: asyncio.Event) -> None:
        claimed_at = time.monotonic()
        log_ = log.bind(email=claim.id, attempt=claim.attempts)
        try:
            attempt = await self._send(claim)
        except Exception:
            log_.exception("email send crashed; it comes due again after its lease")
            return
        if not attempt.sent:
            log_.warning("email attempt failed", error=attempt.error, permanent=attempt.permanent)
        # The server has answered: keep trying to record that while the claim
        # is ours, so a lost database does not turn into a second copy.
        record_until = claimed_at + self._settings.email_claim_lease * 0.8
        delay = 0.25
        while True:
            try:
                async with self._pool.connection() as conn:
                    decision = await email_outbox.record_attempt(
                        conn, claim, attempt, self._settings.email_retry_schedule
                    )
            except (OSError, *_DATABASE_ERRORS) as exc:
                if stopping.is_set() or time.monotonic() + delay > record_until:
                    log_.warning(
                        "email attempt could not be recorded; it comes due again",
                        error=str(exc),
                    )
                    return
                await first_of(stopping, within=delay)
                delay = min(delay * 2, 5.0)
                continue
            except Exception:
                log_.exception("email attempt could not be recorded; it comes due again")
                return
            if decision is None:
                log_.info("email claim superseded; the newer claim decides")
            elif decision.status == "failed":
                log_.warning("email given up", attempts=claim.attempts, error=attempt.error)
            return

    async def _send(self, claim: Claim) -> Attempt:
        settings = self._settings
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        error: str | None = None
        permanent = False
        try:
            message = build_message(settings, claim)
        except ValueError as exc:
            return Attempt(started_at, 0, f"unusable message: {exc}", permanent=True)
        options: dict[str, Any] = {}
        if self._tls_context is not None:
            options["tls_context"] = self._tls_context
        try:
            async with asyncio.timeout(settings.smtp_timeout):
                await aiosmtplib.send(
                    message,
                    hostname=settings.smtp_host,
                    port=settings.smtp_port,
                    username=settings.smtp_username,
                    password=self._password if settings.smtp_username else None,
                    use_tls=settings.smtp_tls,
                    start_tls=settings.smtp_starttls,
                    timeout=settings.smtp_timeout,
                    **options,
                )
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError) as exc:
            error, permanent = describe_failure(exc)
        duration_ms = round((time.perf_counter() - started) * 1000)
        return Attempt(started_at, duration_ms, self._scrub(error), permanent=permanent)

    def _scrub(self, error: str | None) -> str | None:
        """The error as recorded and logged: never the SMTP password, even if
        a server echoed it back."""
        if error is None:
            return None
        if self._password:
            error = error.replace(self._password, REDACTED)
        return error[:ERROR_CHARS]
