"""Webhook endpoint commands. Signing secrets live outside the event store."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from aggregates.webhook_endpoint import WebhookEndpoint
from commands.context import CommandContext
from commands.models import RegisterWebhook, RotateWebhookSecret, UpdateWebhook
from commands.ports import EventStorePort, UrlGuard
from commands.records import WebhookSecretRetiring, WebhookSecretStored
from commands.unit_of_work import CommandResult, Decision, Session, run_command

__all__ = [
    "delete_webhook",
    "disable_webhook",
    "enable_webhook",
    "register_webhook",
    "rotate_webhook_secret",
    "update_webhook",
    "webhook_view",
]


def webhook_view(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": str(endpoint.id),
        "url": endpoint.url,
        "event_types": list(endpoint.event_types),
        "description": endpoint.description,
        "enabled": not endpoint.disabled,
        "disabled_reason": endpoint.disabled_reason,
        "secret_fingerprint": endpoint.current_secret.fingerprint,
        "version": endpoint.version,
        "created_at": endpoint.created_on.isoformat(),
        "updated_at": endpoint.modified_on.isoformat(),
    }


def _new_secret() -> tuple[str, str, str]:
    """(secret id, the whsec_ secret, its fingerprint). The secret is 32 random
    bytes in *standard* base64, which is what Standard Webhooks libraries decode
    (url-safe base64 would silently give them another key)."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    fingerprint = hashlib.sha256(secret.encode()).hexdigest()[:16]
    return "sec_" + secrets.token_hex(8), secret, fingerprint


def register_webhook(
    store: EventStorePort,
    ctx: CommandContext,
    command: RegisterWebhook,
    *,
    url_guard: UrlGuard,
) -> CommandResult:
    url = url_guard(command.url)
    endpoint_id = uuid.uuid4()
    secret_id, secret, fingerprint = _new_secret()

    def decide(session: Session) -> Decision:
        endpoint = session.add(
            WebhookEndpoint.register(
                ctx.actor,
                id=endpoint_id,
                url=url,
                event_types=command.event_types,
                description=command.description,
                secret_id=secret_id,
                secret_fingerprint=fingerprint,
            ),
            id_from_client=False,
        )
        session.record(WebhookSecretStored(secret_id, endpoint_id, ctx.actor.team_id, secret))
        return Decision(
            {"id": str(endpoint_id), "secret": secret}, endpoint, 201, shown_once=("secret",)
        )

    return run_command(store, ctx, "RegisterWebhook", command.model_dump(mode="json"), decide)


def update_webhook(
    store: EventStorePort,
    ctx: CommandContext,
    endpoint_id: UUID,
    command: UpdateWebhook,
    *,
    url_guard: UrlGuard,
) -> CommandResult:
    url = None if command.url is None else url_guard(command.url)

    def decide(session: Session) -> Decision:
        endpoint = session.get(endpoint_id, WebhookEndpoint, what="webhook", precondition=True)
        endpoint.update(
            ctx.actor, url=url, event_types=command.event_types, description=command.description
        )
        return Decision(webhook_view(endpoint), endpoint)

    payload = {"id": str(endpoint_id), **command.model_dump(mode="json")}
    return run_command(store, ctx, "UpdateWebhook", payload, decide)


def rotate_webhook_secret(
    store: EventStorePort, ctx: CommandContext, endpoint_id: UUID, command: RotateWebhookSecret
) -> CommandResult:
    """The new secret signs from now on; the one it replaces keeps signing for
    ``overlap_seconds`` (recorded beside the events, in their transaction)."""
    secret_id, secret, fingerprint = _new_secret()

    def decide(session: Session) -> Decision:
        endpoint = session.get(endpoint_id, WebhookEndpoint, what="webhook", precondition=True)
        previous_id = endpoint.current_secret.secret_id
        valid_until = datetime.now(UTC) + timedelta(seconds=command.overlap_seconds)
        endpoint.rotate_secret(
            ctx.actor,
            new_secret_id=secret_id,
            new_fingerprint=fingerprint,
            previous_valid_until=valid_until,
        )
        session.record(WebhookSecretRetiring(previous_id, valid_until))
        session.record(WebhookSecretStored(secret_id, endpoint_id, ctx.actor.team_id, secret))
        return Decision(
            {"id": str(endpoint_id), "secret": secret}, endpoint, shown_once=("secret",)
        )

    payload = {"id": str(endpoint_id), **command.model_dump(mode="json")}
    return run_command(store, ctx, "RotateWebhookSecret", payload, decide)


def _change(
    store: EventStorePort,
    ctx: CommandContext,
    name: str,
    endpoint_id: UUID,
    change: Callable[[WebhookEndpoint], None],
) -> CommandResult:
    def decide(session: Session) -> Decision:
        endpoint = session.get(endpoint_id, WebhookEndpoint, what="webhook", precondition=True)
        change(endpoint)
        return Decision(webhook_view(endpoint), endpoint)

    return run_command(store, ctx, name, {"id": str(endpoint_id)}, decide)


def disable_webhook(store: EventStorePort, ctx: CommandContext, endpoint_id: UUID) -> CommandResult:
    return _change(
        store, ctx, "DisableWebhook", endpoint_id,
        lambda e: e.disable(ctx.actor, reason="disabled by a member"),
    )  # fmt: skip


def enable_webhook(store: EventStorePort, ctx: CommandContext, endpoint_id: UUID) -> CommandResult:
    return _change(store, ctx, "EnableWebhook", endpoint_id, lambda e: e.enable(ctx.actor))


def delete_webhook(store: EventStorePort, ctx: CommandContext, endpoint_id: UUID) -> CommandResult:
    return _change(store, ctx, "DeleteWebhook", endpoint_id, lambda e: e.delete(ctx.actor))
