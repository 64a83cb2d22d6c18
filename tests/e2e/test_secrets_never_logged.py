"""Secrets never appear in logs, error answers or events.

`chronik api` (two server processes) and `chronik worker` run at DEBUG, their
output captured to a file, with every kind of secret in play: the operator
token, a database URL with a password (of a role made for the test), an SMTP
password the worker logs in with, audit signing keys; and the secrets Chronik
makes: owner and member API keys, a webhook secret (and its rotation). A
webhook delivery fails and an email is sent. Then the captured output, every
error answer and every stored event and snapshot are searched for each secret.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import psycopg
import pytest
from psycopg import sql

from infra.db import PostgresTarget
from infra.devstack.processes import free_port, wait_until
from infra.settings import Settings
from tests.smtp_server import SmtpServer, smtp_server
from tests.webhook_receivers import receiver

SMTP_USER = "chronik-mailer"
JSON = {"content-type": "application/json"}


@contextmanager
def _role_with_password(settings: Settings) -> Iterator[tuple[str, str]]:
    """A login role with a password, member of the test's own user (so it may
    use the test database): the URL the processes get carries a real password."""
    url = settings.database_url_value()
    target = PostgresTarget.from_url(url)
    role, password = f"chronik_secret_{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    base_user = urlsplit(url).username or "postgres"
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                sql.Identifier(role), sql.Literal(password), sql.Identifier(base_user)
            )
        )
    parts = urlsplit(url)
    netloc = f"{role}:{quote(password, safe='')}@{parts.hostname}:{parts.port or 5432}"
    try:
        yield parts._replace(netloc=netloc).geturl(), password
    finally:
        with psycopg.connect(target.conninfo(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("REASSIGN OWNED BY {} TO {}").format(
                    sql.Identifier(role), sql.Identifier(base_user)
                )
            )
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(PostgresTarget.from_url(url).conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", *args], env=env, stdout=out, stderr=out
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class Secrets:
    """Every secret value seen in the test, by name, and every error answer."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.errors: list[str] = []

    def add(self, name: str, value: str) -> None:
        assert len(value) >= 16, f"{name} is too short to search for"
        self.values[name] = value
        # A secret leaked without its prefix (a token split apart) still counts:
        # whsec_<secret>, chk_<key id>_<secret> (the secret may hold "_").
        if value.startswith("whsec_"):
            self.values[f"{name} (secret part)"] = value.removeprefix("whsec_")
        elif value.startswith("chk_"):
            self.values[f"{name} (secret part)"] = value.split("_", 2)[2]

    def answer(self, response: httpx.Response, expected: int) -> dict[str, Any]:
        assert response.status_code == expected, response.text
        if response.status_code >= 400:
            headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
            self.errors.append(f"{response.status_code} {headers}\n{response.text}")
        body: dict[str, Any] = response.json() if response.content else {}
        return body

    def found_in(self, text: str) -> list[str]:
        return sorted(name for name, value in self.values.items() if value in text)


@dataclass
class Stack:
    base: str
    found: Secrets
    log: Path
    mail: SmtpServer
    processes: ExitStack

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)

    def stop(self) -> str:
        """Stops the processes (so all they would write is written); their output."""
        self.processes.close()
        return self.log.read_text()


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    found = Secrets()
    operator_token = secrets.token_urlsafe(32)
    smtp_password = secrets.token_urlsafe(24)
    signing_secret = secrets.token_urlsafe(40)
    found.add("operator token", operator_token)
    found.add("SMTP password", smtp_password)
    found.add("audit signing key", signing_secret)
    log = tmp_path / "processes.log"
    port = free_port()
    with ExitStack() as outer:
        url, db_password = outer.enter_context(_role_with_password(settings))
        found.add("database password", db_password)
        mail = outer.enter_context(smtp_server(credentials=(SMTP_USER, smtp_password)))
        env = {
            **os.environ,
            "CHRONIK_DATABASE_URL": url,
            "CHRONIK_NATS_URL": settings.nats_url or "",
            "CHRONIK_NATS_NAMESPACE": settings.nats_namespace,
            "CHRONIK_HTTP_PORT": str(port),
            # As served on 2 cores: uvicorn's spawned workers must log redacted too.
            "CHRONIK_HTTP_WORKERS": "2",
            "CHRONIK_DB_POOL_SIZE": "3",  # a shared test server has connections to spare, not many
            "CHRONIK_OPERATOR_TOKEN": operator_token,
            "CHRONIK_SMTP_HOST": mail.host,
            "CHRONIK_SMTP_PORT": str(mail.port),
            "CHRONIK_SMTP_USERNAME": SMTP_USER,
            "CHRONIK_SMTP_PASSWORD": smtp_password,
            "CHRONIK_AUDIT_SIGNING_KEYS": f"k1:{signing_secret}",
            "CHRONIK_AUDIT_CHECKPOINT_EVERY": "1",
            "CHRONIK_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
            "CHRONIK_WEBHOOK_RETRY_SCHEDULE": "0,0.2,0.2",
            "CHRONIK_PROJECTION_POLL_INTERVAL": "0.2",
            "CHRONIK_WORKER_METRICS_PORT": str(free_port()),
            "CHRONIK_LOG_LEVEL": "DEBUG",
            "CHRONIK_LOG_FORMAT": "json",
        }
        processes = outer.enter_context(ExitStack())
        processes.enter_context(_process(["worker"], env, log))
        api = processes.enter_context(_process(["api"], env, log))
        running = Stack(f"http://127.0.0.1:{port}", found, log, mail, processes)

        def up() -> bool:
            assert api.poll() is None, log.read_text()
            try:
                return httpx.get(f"{running.base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=60, what="the API to start")
        yield running


def _stored_texts(settings: Settings) -> list[str]:
    """Every stored event and snapshot (topic and state), and every webhook
    attempt's recorded error and answer."""
    with psycopg.connect(PostgresTarget.from_url(settings.database_url_value()).conninfo()) as c:
        rows = [
            *c.execute("SELECT topic, state FROM chronik_events"),
            *c.execute("SELECT topic, state FROM chronik_snapshots"),
        ]
        texts = [f"{topic} {bytes(state).decode('utf-8', 'replace')}" for topic, state in rows]
        attempts = c.execute("SELECT error, response_excerpt FROM webhook_attempts").fetchall()
    assert len(attempts) >= 2
    return texts + [str(row) for row in attempts]


def _emails_sent(settings: Settings) -> int:
    with psycopg.connect(PostgresTarget.from_url(settings.database_url_value()).conninfo()) as c:
        row = c.execute("SELECT count(*) FROM email_outbox WHERE status = 'sent'").fetchone()
    assert row is not None
    return int(row[0])


def test_no_secret_reaches_logs_errors_or_events(stack: Stack, settings: Settings) -> None:
    found = stack.found
    operator_token = found.values["operator token"]
    created = stack.client(operator_token).post(
        "/v1/teams", json={"name": "Acme", "plan": "team", "owner_email": "o@example.com"}
    )
    team = found.answer(created, 201)["data"]
    owner_key = team["owner_key"]
    found.add("owner key", owner_key)
    owner = stack.client(owner_key)
    t = f"/v1/teams/{team['id']}"

    # A member (emailed: the worker logs in to SMTP) and their key.
    added = owner.post(
        f"{t}/members", json={"email": "m@example.com", "display_name": "Mia", "role": "member"}
    )
    user_id = found.answer(added, 201)["data"]["user_id"]
    key = owner.post(f"{t}/api-keys", json={"user_id": user_id, "name": "laptop"})
    member_key = found.answer(key, 201)["data"]["key"]
    found.add("member key", member_key)
    member = stack.client(member_key)

    # A webhook endpoint whose receiver fails, its secret rotated.
    with receiver(status=500) as failing:
        body = {"url": failing.url, "event_types": ["entry.created"], "description": "x"}
        hook = found.answer(owner.post(f"{t}/webhooks", json=body), 201)["data"]
        found.add("webhook secret", hook["secret"])
        rotate = owner.post(
            f"{t}/webhooks/{hook['id']}/rotate-secret", json={"overlap_seconds": 60}
        )
        found.add("rotated webhook secret", found.answer(rotate, 200)["data"]["secret"])
        found.answer(member.post(f"{t}/entries", json={"title": "hello"}), 201)
        wait_until(lambda: len(failing.received()) >= 2, timeout=60, what="failed deliveries")
    wait_until(lambda: _emails_sent(settings) >= 1, timeout=60, what="an email to be sent")
    assert (SMTP_USER, found.values["SMTP password"]) in stack.mail.logins

    # Error answers, each with a secret close at hand.
    found.answer(stack.client(owner_key[:-4] + "abcd").get("/v1/me"), 401)
    found.answer(stack.client(operator_token + "x").post("/v1/teams", json={}), 401)
    others = {"user_id": team["owner_user_id"], "name": "x"}
    found.answer(member.post(f"{t}/api-keys", json=others), 403)
    found.answer(owner.post(f"{t}/webhooks", json={"url": hook["secret"], "x": owner_key}), 422)
    broken = b'{"title": "' + owner_key.encode()
    found.answer(owner.post(f"{t}/entries", content=broken, headers=JSON), 400)
    found.answer(member.delete(f"{t}/webhooks/{hook['id']}"), 403)

    output = stack.stop()
    lines = output.splitlines()
    # Sanity: DEBUG output of both processes was captured, and both API
    # workers log through the configured (JSON, redacting) pipeline.
    assert len(lines) > 50
    assert any('"level":"debug"' in line for line in lines)
    opened = [line for line in lines if "opening database" in line]
    assert len(opened) >= 2
    assert all(line.startswith("{") for line in opened), opened
    leaks = {line: found.found_in(line) for line in lines if found.found_in(line)}
    assert leaks == {}
    for text in _stored_texts(settings):
        assert found.found_in(text) == [], text
    assert len(found.errors) >= 6
    for error in found.errors:
        assert found.found_in(error) == [], error


@pytest.mark.parametrize(
    ("variable", "template", "exit_code"),
    [
        # Nothing listens on port 1: the connection error is printed.
        ("CHRONIK_DATABASE_URL", "postgresql://app:{}@127.0.0.1:1/chronik", 1),
        ("CHRONIK_DATABASE_URL", "postgresql://app:{}@127.0.0.1:port/chronik", 2),
        ("CHRONIK_AUDIT_SIGNING_KEYS", "k1:{}", 2),  # too short to sign with
        ("CHRONIK_AUDIT_SIGNING_KEYS", "k1:{0},k1:{0}{0}", 2),  # an id twice
    ],
)
def test_a_failing_start_prints_no_secret(variable: str, template: str, exit_code: int) -> None:
    secret = secrets.token_hex(8)
    env = {**os.environ, variable: template.format(secret), "CHRONIK_LOG_LEVEL": "DEBUG"}
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == exit_code, done.stderr
    assert done.stderr.startswith("chronik: "), done.stderr
    assert secret not in done.stdout + done.stderr
