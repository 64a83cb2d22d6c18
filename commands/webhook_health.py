"""What the delivery worker does to an endpoint through its aggregate, so the
change is an event like any other (``webhook.disabled`` reaches the feed,
webhooks of other endpoints and notifications)."""

from __future__ import annotations

from uuid import UUID

from aggregates.webhook_endpoint import WebhookEndpoint
from commands.context import CommandContext
from commands.ports import EventStorePort
from commands.unit_of_work import CommandResult, Decision, Session, run_command
from commands.webhooks import webhook_view

__all__ = ["disable_failing_webhook"]


def disable_failing_webhook(
    store: EventStorePort, team_id: UUID, endpoint_id: UUID, reason: str
) -> CommandResult:
    """Disables the endpoint for ``reason``; nothing is recorded if it is
    already disabled (several deliveries may fail at once)."""
    ctx = CommandContext.for_system(team_id, correlation_id=f"webhook-health:{endpoint_id}")

    def decide(session: Session) -> Decision:
        endpoint = session.get(endpoint_id, WebhookEndpoint, what="webhook")
        endpoint.disable_automatically(reason=reason)
        return Decision(webhook_view(endpoint), endpoint)

    payload = {"id": str(endpoint_id), "reason": reason}
    return run_command(store, ctx, "DisableFailingWebhook", payload, decide)
