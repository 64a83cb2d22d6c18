"""Notifications all the way to an SMTP server: a command over HTTP, the relay
through real NATS, the notification consumer, the email sender and a real
local SMTP server, which goes away and comes back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from infra.devstack.processes import wait_until
from infra.settings import Settings
from tests.e2e.conftest import Api
from tests.smtp_server import SmtpServer, free_port, smtp_server

PORT = free_port()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server(port=PORT, started=False) as server:
        yield server


@pytest.fixture
def api_settings(api_settings: Settings) -> Settings:
    return api_settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": PORT,
            "smtp_timeout": 2.0,
            "email_claim_lease": 5.0,
            "email_retry_schedule": [0.0] + [0.3] * 60,
        }
    )


def _join(api: Api, team: dict[str, Any], name: str) -> None:
    with api.client(team["owner_key"]) as owner:
        added = owner.post(
            f"/v1/teams/{team['id']}/members",
            json={"email": f"{name}@example.com", "display_name": name.title(), "role": "member"},
        )
    assert added.status_code == 201, added.text


def _count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, ("ada@example.com",)).fetchone()
    assert row is not None
    return int(row[0])


ADA_NOTIFICATIONS = """
SELECT count(*) FROM notifications n JOIN reads.team_members m USING (team_id, user_id)
WHERE m.email = %s
"""
ADA_FAILED_ATTEMPTS = """
SELECT count(*) FROM email_attempts a JOIN email_outbox o ON o.id = a.email_id
WHERE o.to_address = %s AND a.outcome = 'failed'
"""
ADA_SENT = "SELECT count(*) FROM email_outbox WHERE to_address = %s AND status = 'sent'"


@pytest.mark.usefixtures("fanout")
def test_the_inbox_does_not_wait_for_smtp_and_the_email_follows_when_it_returns(
    api: Api, api_settings: Settings, smtp: SmtpServer
) -> None:
    url = api_settings.database_url_value()
    team = api.create_team()
    # The SMTP server is down: Ada's notifications appear regardless, and the
    # sender's attempts to email her fail and are recorded.
    _join(api, team, "ada")
    with api.client(team["owner_key"]) as owner:
        shared = owner.post(f"/v1/teams/{team['id']}/entries", json={"title": "Hello team"})
    assert shared.status_code == 201, shared.text
    wait_until(lambda: _count(url, ADA_NOTIFICATIONS) == 2, timeout=30, what="Ada's inbox")
    wait_until(lambda: _count(url, ADA_FAILED_ATTEMPTS) >= 2, timeout=30, what="failed attempts")
    assert _count(url, ADA_SENT) == 0

    smtp.start()

    def to_ada() -> list[str]:
        return [
            str(m.message["Subject"]) for m in smtp.messages() if "ada@example.com" in m.rcpt_tos
        ]

    wait_until(lambda: _count(url, ADA_SENT) == 2, timeout=30, what="emails to Ada sent")
    assert len(to_ada()) == 2  # one email per notification, each sent once
    assert len({m.message_id for m in smtp.messages()}) == len(smtp.messages())
