"""Which secrets sign an endpoint's deliveries, before, during and after a
rotation, as the delivery worker looks them up (``deliveries.endpoints_of``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from aggregates.webhook_endpoint import WebhookEndpoint
from commands import webhooks
from commands.context import CommandContext
from commands.models import RegisterWebhook, RotateWebhookSecret
from commands.url_policy import check_webhook_url
from infra import deliveries
from infra.event_store import EventStore
from infra.signing import webhook_headers
from projections.webhooks import WebhooksProjection
from tests.projection_support import connect, create_team, running_worker, wait_caught_up

Lookup = Callable[[UUID], list[str]]
BODY = b'{"type":"entry.created"}'


def _register(store: EventStore, ctx: CommandContext) -> tuple[UUID, str]:
    command = RegisterWebhook(url="https://hooks.example.com/in", event_types=[])
    data = webhooks.register_webhook(store, ctx, command, url_guard=check_webhook_url).data
    return UUID(data["id"]), data["secret"]


def _rotate(store: EventStore, ctx: CommandContext, endpoint_id: UUID, overlap: int) -> str:
    command = RotateWebhookSecret(overlap_seconds=overlap)
    secret: str = webhooks.rotate_webhook_secret(store, ctx, endpoint_id, command).data["secret"]
    return secret


@pytest.fixture
def signing_secrets(database_url: str, store: EventStore) -> Iterator[Lookup]:
    """The secrets that sign an endpoint's deliveries now, newest first, read
    as the delivery worker reads them (beside the webhooks read model)."""
    with running_worker(database_url, store, [WebhooksProjection()]):

        def lookup(endpoint_id: UUID) -> list[str]:
            wait_caught_up(database_url, "webhooks")

            async def read() -> list[str]:
                async with await psycopg.AsyncConnection.connect(
                    database_url, autocommit=True
                ) as conn:
                    found = await deliveries.endpoints_of(conn, [endpoint_id])
                return found[endpoint_id].secrets

            return asyncio.run(read())

        yield lookup


def _rows(database_url: str, endpoint_id: UUID) -> list[dict[str, Any]]:
    with connect(database_url) as conn:
        cur = conn.execute(
            "SELECT secret, valid_until FROM webhook_secrets WHERE endpoint_id = %s"
            " ORDER BY created_at",
            (endpoint_id,),
        )
        return [{"secret": s, "valid_until": v} for s, v in cur.fetchall()]


def test_during_the_overlap_both_secrets_sign_newest_first(
    database_url: str, store: EventStore, signing_secrets: Lookup
) -> None:
    ctx = CommandContext(actor=create_team(store).owner)
    endpoint_id, first = _register(store, ctx)
    assert signing_secrets(endpoint_id) == [first]

    before = datetime.now(UTC)
    second = _rotate(store, ctx, endpoint_id, overlap=3600)
    signers = signing_secrets(endpoint_id)
    assert signers == [second, first]

    # The table and the aggregate agree on when the old secret stops signing.
    old, new = _rows(database_url, endpoint_id)
    assert new == {"secret": second, "valid_until": None}
    assert before + timedelta(seconds=3600) <= old["valid_until"]
    assert old["valid_until"] <= datetime.now(UTC) + timedelta(seconds=3600)
    endpoint = store.get(endpoint_id, WebhookEndpoint)
    assert endpoint is not None
    assert endpoint.secrets[0].valid_until == old["valid_until"]

    headers = webhook_headers(signers, "evt_1", int(time.time()), BODY)
    for secret in (first, second):
        Webhook(secret).verify(BODY, headers)


def test_after_the_overlap_only_the_new_secret_signs(
    store: EventStore, signing_secrets: Lookup
) -> None:
    ctx = CommandContext(actor=create_team(store).owner)
    endpoint_id, first = _register(store, ctx)
    second = _rotate(store, ctx, endpoint_id, overlap=0)
    signers = signing_secrets(endpoint_id)
    assert signers == [second]
    headers = webhook_headers(signers, "evt_2", int(time.time()), BODY)
    Webhook(second).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(first).verify(BODY, headers)

    # A second rotation ends the second secret too; the first stays ended.
    third = _rotate(store, ctx, endpoint_id, overlap=600)
    assert signing_secrets(endpoint_id) == [third, second]
