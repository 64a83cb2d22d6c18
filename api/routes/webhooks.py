"""Webhook endpoints, managed by owners and admins."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter

from aggregates.webhook_endpoint import WebhookEndpoint
from api.dependencies import CommandCtx, ServicesDep, TeamActor
from api.errors import ApiError
from api.responses import OrjsonResponse
from api.results import command_response, read_in_team, resource_response
from commands import webhooks
from commands.models import RegisterWebhook, RotateWebhookSecret, UpdateWebhook

router = APIRouter(prefix="/v1/teams/{team_id}/webhooks", tags=["webhooks"])


@router.post("", status_code=201, summary="Register an endpoint (secret shown once)")
def register(body: RegisterWebhook, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    allowed = services.settings.webhook_allowed_networks
    result = webhooks.register_webhook(services.event_store, ctx, body, allowed_networks=allowed)
    return command_response(result)


@router.get("/{webhook_id}", summary="One endpoint (never its secret)")
def get_webhook(webhook_id: UUID, actor: TeamActor, services: ServicesDep) -> OrjsonResponse:
    endpoint = read_in_team(services, webhook_id, WebhookEndpoint, actor, "webhook")
    if endpoint.deleted:
        raise ApiError(404, "NOT_FOUND", "webhook not found")
    if not actor.is_manager:
        raise ApiError(403, "FORBIDDEN", "only owners and admins manage webhooks")
    return resource_response(webhooks.webhook_view(endpoint), endpoint.version)


@router.patch("/{webhook_id}", summary="Change an endpoint's URL, filter or description")
def update(
    webhook_id: UUID, body: UpdateWebhook, ctx: CommandCtx, services: ServicesDep
) -> OrjsonResponse:
    allowed = services.settings.webhook_allowed_networks
    result = webhooks.update_webhook(
        services.event_store, ctx, webhook_id, body, allowed_networks=allowed
    )
    return command_response(result)


@router.delete("/{webhook_id}", summary="Delete an endpoint")
def delete(webhook_id: UUID, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(webhooks.delete_webhook(services.event_store, ctx, webhook_id))


@router.post("/{webhook_id}/rotate-secret", summary="Rotate the signing secret")
def rotate_secret(
    webhook_id: UUID, body: RotateWebhookSecret, ctx: CommandCtx, services: ServicesDep
) -> OrjsonResponse:
    result = webhooks.rotate_webhook_secret(services.event_store, ctx, webhook_id, body)
    return command_response(result)


@router.post("/{webhook_id}/disable", summary="Stop deliveries to an endpoint")
def disable(webhook_id: UUID, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(webhooks.disable_webhook(services.event_store, ctx, webhook_id))


@router.post("/{webhook_id}/enable", summary="Resume deliveries to an endpoint")
def enable(webhook_id: UUID, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(webhooks.enable_webhook(services.event_store, ctx, webhook_id))
