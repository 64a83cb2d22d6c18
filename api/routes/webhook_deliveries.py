"""Webhook deliveries of one endpoint: what was sent, every attempt, resend,
recovery and the endpoint's health. Owners and admins only, as for endpoints.

These are not commands: resend and recovery change the delivery tables the
delivery worker reads (a new round, due now) and append no event.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final
from uuid import UUID

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from aggregates.base import Actor
from aggregates.errors import WebhookDisabled
from api.dependencies import ServicesDep, TeamActor
from api.documented import ACCEPTED, PAGE, RESOURCE
from api.errors import ERROR_RESPONSES, ApiError, validation_error
from api.freshness import WebhooksFresh
from api.pagination import PageQuery, page_response
from api.responses import OrjsonResponse
from api.timestamps import Rfc3339
from infra import delivery_reads
from infra.deliveries import STATUSES
from infra.delivery_reads import DeliveryFilter
from projections import webhooks as webhook_reads
from projections.public_events import PUBLIC_TYPES
from projections.reading import Conn, iso

__all__ = ["RecoverDeliveries", "router"]

router = APIRouter(
    prefix="/v1/teams/{team_id}/webhooks/{webhook_id}", tags=["webhooks"], responses=ERROR_RESPONSES
)

DeliveryId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The delivery's id.")]
_KNOWN_TYPES: Final = frozenset(PUBLIC_TYPES)
MAX_WINDOW_HOURS: Final = 168


class DeliveryQuery(PageQuery):
    status: str | None = Field(
        default=None,
        max_length=200,
        description=f"Comma-separated statuses, any of: {', '.join(STATUSES)}.",
    )
    event_type: str | None = Field(
        default=None,
        max_length=2000,
        description="Comma-separated public event types, e.g. entry.created,entry.edited.",
    )
    since: Rfc3339 | None = Field(
        default=None, description="Created at or after this time (RFC 3339 with an offset)."
    )
    until: Rfc3339 | None = Field(
        default=None, description="Created before this time (RFC 3339 with an offset)."
    )


class HealthQuery(BaseModel):
    window_hours: int = Field(
        default=24, ge=1, le=MAX_WINDOW_HOURS, description="Hours of deliveries and attempts."
    )


class RecoverDeliveries(BaseModel):
    """Requeue the endpoint's failed and canceled deliveries created since a time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    since: Rfc3339 = Field(description="RFC 3339 with an offset; not in the future.")

    @field_validator("since")
    @classmethod
    def _not_in_the_future(cls, value: datetime) -> datetime:
        if value > datetime.now(UTC):
            raise ValueError("since must not be in the future")
        return value


def _choices(raw: str | None, known: tuple[str, ...], field: str) -> list[str] | None:
    """The distinct values asked for, in order; None for all. Unknown ones are a
    422 that names them, so a typo never silently filters everything out."""
    wanted = list(dict.fromkeys(v.strip() for v in (raw or "").split(",") if v.strip()))
    unknown = [v for v in wanted if v not in known]
    if unknown:
        message = f"unknown {field}: {', '.join(unknown)}"
        raise validation_error(
            f"query.{field}", message, kind="enum", unknown=unknown, allowed=list(known)
        )
    return wanted or None


def _require_manager(actor: Actor) -> None:
    if not actor.is_manager:
        raise ApiError(403, "FORBIDDEN", "only owners and admins manage webhooks")


def _endpoint(conn: Conn, actor: Actor, webhook_id: UUID) -> dict[str, Any]:
    """The team's endpoint, or 404; then 403 unless a manager asks (as the
    endpoint routes answer)."""
    row = webhook_reads.get_webhook(conn, actor.team_id, webhook_id)
    if row is None:
        raise ApiError(404, "NOT_FOUND", "webhook not found")
    _require_manager(actor)
    return row


def _require_enabled(endpoint: dict[str, Any]) -> None:
    if not endpoint["enabled"]:
        raise WebhookDisabled(
            "webhook endpoint is disabled; enable it first",
            webhook_id=str(endpoint["id"]),
            reason=endpoint["disabled_reason"],
        )


def _delivery_not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", "delivery not found")


@router.get(
    "/deliveries", summary="The endpoint's deliveries, newest first (no bodies)", responses=PAGE
)
def list_deliveries(
    webhook_id: UUID,
    query: Annotated[DeliveryQuery, Query()],
    actor: TeamActor,
    services: ServicesDep,
    _: WebhooksFresh,
) -> OrjsonResponse:
    filters = DeliveryFilter(
        statuses=_choices(query.status, STATUSES, "status"),
        event_types=_choices(query.event_type, PUBLIC_TYPES, "event_type"),
        since=query.since,
        until=query.until,
    )
    if query.since is not None and query.until is not None and query.until <= query.since:
        raise validation_error("query.until", "until must be after since")
    with services.pool.connection() as conn:
        _endpoint(conn, actor, webhook_id)
        page = delivery_reads.list_deliveries(
            conn, actor.team_id, webhook_id, filters, limit=query.limit, cursor=query.cursor
        )
    return page_response([delivery_reads.delivery_view(r) for r in page.rows], page.next_cursor)


@router.get(
    "/deliveries/{delivery_id}",
    summary="One delivery: the body as sent and its attempts (the newest 100)",
    responses=RESOURCE,
)
def get_delivery(
    webhook_id: UUID,
    delivery_id: DeliveryId,
    actor: TeamActor,
    services: ServicesDep,
    _: WebhooksFresh,
) -> OrjsonResponse:
    with services.pool.connection() as conn:
        _endpoint(conn, actor, webhook_id)
        row = delivery_reads.get_delivery(conn, actor.team_id, webhook_id, delivery_id)
        if row is None:
            raise _delivery_not_found()
        attempts = delivery_reads.recent_attempts(conn, actor.team_id, webhook_id, delivery_id)
    return OrjsonResponse({"data": delivery_reads.delivery_detail(row, attempts)})


@router.get(
    "/deliveries/{delivery_id}/attempts",
    summary="A delivery's attempts, oldest first",
    responses=PAGE,
)
def list_attempts(
    webhook_id: UUID,
    delivery_id: DeliveryId,
    query: Annotated[PageQuery, Query()],
    actor: TeamActor,
    services: ServicesDep,
    _: WebhooksFresh,
) -> OrjsonResponse:
    with services.pool.connection() as conn:
        _endpoint(conn, actor, webhook_id)
        if delivery_reads.get_delivery(conn, actor.team_id, webhook_id, delivery_id) is None:
            raise _delivery_not_found()
        page = delivery_reads.list_attempts(
            conn, actor.team_id, webhook_id, delivery_id, limit=query.limit, cursor=query.cursor
        )
    return page_response([delivery_reads.attempt_view(r) for r in page.rows], page.next_cursor)


@router.post(
    "/deliveries/{delivery_id}/resend",
    status_code=202,
    summary="Send a delivery again now, in a new round of attempts",
    responses=ACCEPTED,
)
def resend(
    webhook_id: UUID,
    delivery_id: DeliveryId,
    actor: TeamActor,
    services: ServicesDep,
    _: WebhooksFresh,
) -> OrjsonResponse:
    with services.pool.connection() as conn:
        endpoint = _endpoint(conn, actor, webhook_id)
        if not endpoint["enabled"]:
            # A delivery that is not there is 404 whatever the endpoint's state.
            if delivery_reads.get_delivery(conn, actor.team_id, webhook_id, delivery_id) is None:
                raise _delivery_not_found()
            _require_enabled(endpoint)
        row = delivery_reads.resend_delivery(conn, actor.team_id, webhook_id, delivery_id)
    if row is None:
        raise _delivery_not_found()
    return OrjsonResponse({"data": delivery_reads.delivery_view(row)}, status_code=202)


@router.post(
    "/recover",
    status_code=202,
    summary="Requeue the endpoint's failed and canceled deliveries created since a time",
    responses=ACCEPTED,
)
def recover(
    webhook_id: UUID,
    body: RecoverDeliveries,
    actor: TeamActor,
    services: ServicesDep,
    _: WebhooksFresh,
) -> OrjsonResponse:
    with services.pool.connection() as conn:
        _require_enabled(_endpoint(conn, actor, webhook_id))
        requeued = delivery_reads.recover_endpoint(conn, actor.team_id, webhook_id, body.since)
    return OrjsonResponse(
        {"data": {"requeued": requeued, "since": iso(body.since)}}, status_code=202
    )


@router.get(
    "/health",
    summary="The endpoint's failure streak, recent deliveries and backlog",
    responses=RESOURCE,
)
def health(
    webhook_id: UUID,
    query: Annotated[HealthQuery, Query()],
    actor: TeamActor,
    services: ServicesDep,
    _: WebhooksFresh,
) -> OrjsonResponse:
    with services.pool.connection() as conn:
        endpoint = _endpoint(conn, actor, webhook_id)
        summary = delivery_reads.endpoint_health(
            conn, actor.team_id, webhook_id, window_hours=query.window_hours
        )
    data = {"webhook_id": str(webhook_id), "enabled": endpoint["enabled"], **summary}
    return OrjsonResponse({"data": data})
