"""Webhook endpoints, managed by owners and admins; reads come from the
webhooks read model."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from aggregates.base import Actor
from api.dependencies import CommandCtx, ServicesDep, TeamActor
from api.documented import COMMAND, CREATED, PAGE, RESOURCE
from api.errors import ERROR_RESPONSES, ApiError
from api.freshness import WebhooksFresh
from api.pagination import PageQuery, page_response
from api.responses import OrjsonResponse
from api.results import command_response, resource_response
from commands import webhooks
from commands.models import RegisterWebhook, RotateWebhookSecret, UpdateWebhook
from commands.ports import UrlGuard
from infra.outbound import check_webhook_target
from infra.settings import Settings
from projections import webhooks as webhook_reads

router = APIRouter(
    prefix="/v1/teams/{team_id}/webhooks", tags=["webhooks"], responses=ERROR_RESPONSES
)


def _url_guard(settings: Settings) -> UrlGuard:
    """The registration-time SSRF check: static rules, then the host's addresses."""
    allowed = tuple(settings.webhook_allowed_networks)

    def guard(url: str) -> str:
        return check_webhook_target(url, allowed)

    return guard


@router.post(
    "", status_code=201, summary="Register an endpoint (secret shown once)", responses=CREATED
)
def register(body: RegisterWebhook, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    guard = _url_guard(services.settings)
    result = webhooks.register_webhook(services.event_store, ctx, body, url_guard=guard)
    return command_response(result)


def _require_manager(actor: Actor) -> None:
    if not actor.is_manager:
        raise ApiError(403, "FORBIDDEN", "only owners and admins manage webhooks")


@router.get("", summary="The team's endpoints, newest first (never their secrets)", responses=PAGE)
def list_webhooks(
    query: Annotated[PageQuery, Query()],
    actor: TeamActor,
    services: ServicesDep,
    _: WebhooksFresh,
) -> OrjsonResponse:
    _require_manager(actor)
    with services.pool.connection() as conn:
        page = webhook_reads.list_webhooks(
            conn, actor.team_id, limit=query.limit, cursor=query.cursor
        )
    return page_response([webhook_reads.webhook_view(r) for r in page.rows], page.next_cursor)


@router.get("/{webhook_id}", summary="One endpoint (never its secret)", responses=RESOURCE)
def get_webhook(
    webhook_id: UUID, actor: TeamActor, services: ServicesDep, _: WebhooksFresh
) -> OrjsonResponse:
    with services.pool.connection() as conn:
        row = webhook_reads.get_webhook(conn, actor.team_id, webhook_id)
    # Missing or deleted before forbidden, in the order the aggregate read answered.
    if row is None:
        raise ApiError(404, "NOT_FOUND", "webhook not found")
    _require_manager(actor)
    return resource_response(webhook_reads.webhook_view(row), row["version"])


@router.patch(
    "/{webhook_id}", summary="Change an endpoint's URL, filter or description", responses=COMMAND
)
def update(
    webhook_id: UUID, body: UpdateWebhook, ctx: CommandCtx, services: ServicesDep
) -> OrjsonResponse:
    guard = _url_guard(services.settings)
    result = webhooks.update_webhook(services.event_store, ctx, webhook_id, body, url_guard=guard)
    return command_response(result)


@router.delete("/{webhook_id}", summary="Delete an endpoint", responses=COMMAND)
def delete(webhook_id: UUID, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(webhooks.delete_webhook(services.event_store, ctx, webhook_id))


@router.post("/{webhook_id}/rotate-secret", summary="Rotate the signing secret", responses=COMMAND)
def rotate_secret(
    webhook_id: UUID, body: RotateWebhookSecret, ctx: CommandCtx, services: ServicesDep
) -> OrjsonResponse:
    result = webhooks.rotate_webhook_secret(services.event_store, ctx, webhook_id, body)
    return command_response(result)


@router.post("/{webhook_id}/disable", summary="Stop deliveries to an endpoint", responses=COMMAND)
def disable(webhook_id: UUID, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(webhooks.disable_webhook(services.event_store, ctx, webhook_id))


@router.post("/{webhook_id}/enable", summary="Resume deliveries to an endpoint", responses=COMMAND)
def enable(webhook_id: UUID, ctx: CommandCtx, services: ServicesDep) -> OrjsonResponse:
    return command_response(webhooks.enable_webhook(services.event_store, ctx, webhook_id))
