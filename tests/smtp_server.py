"""A real SMTP server on loopback (aiosmtpd), scripted per test.

It records every message it accepts; ``refuse("451 4.3.0 Try again later")``
makes it answer DATA with that reply (``times=N``: the next N messages only),
``refuse_recipients("550 5.1.1 No such user")`` answers RCPT with it; it can
``stop()`` and ``start()`` again on the same port (the SMTP server going away
and coming back); with ``credentials`` it offers AUTH (without TLS, for
tests) and accepts only that login.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["Received", "SmtpServer", "free_port", "smtp_server"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    at: float  # time.time() when it was accepted

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"]).strip()


class SmtpServer:
    def __init__(self, port: int | None = None, credentials: tuple[str, str] | None = None):
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.credentials = credentials
        self.logins: list[tuple[str, str]] = []  # every AUTH tried (login, password)
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self._refusal: str | None = None
        self._refusals_left: int | None = None
        self._recipient_refusal: str | None = None
        self.refused = 0  # messages answered with a refusal
        self._controller: Controller | None = None

    # -- control -------------------------------------------------------------

    def start(self) -> None:
        assert self._controller is None, "already running"
        extra: dict[str, Any] = {}
        if self.credentials is not None:
            extra = {"authenticator": self._authenticate, "auth_require_tls": False}
        controller = Controller(
            self, hostname=self.host, port=self.port, server_hostname="smtp.test", **extra
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def refuse(self, reply: str, *, times: int | None = None) -> None:
        """Answer DATA with ``reply`` (e.g. "451 4.3.0 Try again later"),
        for the next ``times`` messages or until ``accept()``."""
        with self._lock:
            self._refusal, self._refusals_left = reply, times

    def refuse_recipients(self, reply: str) -> None:
        with self._lock:
            self._recipient_refusal = reply

    def accept(self) -> None:
        with self._lock:
            self._refusal = self._refusals_left = self._recipient_refusal = None

    def messages(self) -> list[Received]:
        with self._lock:
            return list(self._messages)

    # -- aiosmtpd handler hooks (run in the server's thread) -----------------

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self._lock:
            if self._recipient_refusal is not None:
                return self._recipient_refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            if self._refusal is not None:
                reply = self._refusal
                if self._refusals_left is not None:
                    self._refusals_left -= 1
                    if self._refusals_left <= 0:
                        self._refusal = self._refusals_left = None
                self.refused += 1
                return reply
            content = envelope.content
            raw = content.encode() if isinstance(content, str) else bytes(content or b"")
            parsed = message_from_bytes(raw, policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            self._messages.append(
                Received(str(envelope.mail_from), list(envelope.rcpt_tos), parsed, time.time())
            )
        return "250 Message accepted for delivery"

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = data.login.decode(), data.password.decode()
        with self._lock:
            self.logins.append((login, password))
        return AuthResult(success=(login, password) == self.credentials, handled=False)


@contextmanager
def smtp_server(
    *, port: int | None = None, credentials: tuple[str, str] | None = None, started: bool = True
) -> Iterator[SmtpServer]:
    server = SmtpServer(port, credentials)
    if started:
        server.start()
    try:
        yield server
    finally:
        server.stop()
