"""The caller's own notifications (the in-app inbox) and notification
preferences. Nobody reads another member's inbox or sets their preferences:
every route here acts on the member the API key belongs to.

The inbox is filled by the notification consumer from the event stream, a
moment after the event; preferences are commands, read back from the
``notification_preferences`` read model (``min_position`` waits for it).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from aggregates.notification_preferences import NotificationKind
from api.dependencies import CommandCtx, ServicesDep, TeamActor
from api.documented import COMMAND, INBOX_PAGE, LIST, RESOURCE
from api.errors import ERROR_RESPONSES, ApiError
from api.freshness import fresh
from api.pagination import PageQuery
from api.responses import OrjsonResponse
from api.results import command_response
from commands import notifications as commands
from commands.models import SetNotificationPreference
from infra import inbox
from projections import notification_preferences as preference_reads

__all__ = ["router"]

router = APIRouter(prefix="/v1/teams/{team_id}", tags=["notifications"], responses=ERROR_RESPONSES)

NotificationId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The notification's id.")]
PreferencesFresh = Annotated[None, Depends(fresh("notification_preferences"))]


class InboxQuery(PageQuery):
    unread: bool = False


@router.get(
    "/notifications", summary="The caller's notifications, newest first", responses=INBOX_PAGE
)
def list_notifications(
    query: Annotated[InboxQuery, Query()], actor: TeamActor, services: ServicesDep
) -> OrjsonResponse:
    with services.pool.connection() as conn:
        page, unread_count = inbox.list_inbox(
            conn,
            actor.team_id,
            actor.user_id,
            unread=query.unread,
            limit=query.limit,
            cursor=query.cursor,
        )
    return OrjsonResponse(
        {
            "data": [inbox.notification_view(r) for r in page.rows],
            "next_cursor": page.next_cursor,
            "unread_count": unread_count,
        }
    )


# Declared before /{notification_id}/read so "read-all" is never taken for an id.
@router.post(
    "/notifications/read-all",
    summary="Mark all the caller's notifications read",
    responses=RESOURCE,
)
def mark_all_read(actor: TeamActor, services: ServicesDep) -> OrjsonResponse:
    with services.pool.connection() as conn:
        marked = inbox.mark_all_read(conn, actor.team_id, actor.user_id)
    return OrjsonResponse({"data": {"marked": marked}})


@router.get(
    "/notifications/{notification_id}",
    summary="One of the caller's notifications",
    responses=RESOURCE,
)
def get_notification(
    notification_id: NotificationId, actor: TeamActor, services: ServicesDep
) -> OrjsonResponse:
    with services.pool.connection() as conn:
        row = inbox.get_notification(conn, actor.team_id, actor.user_id, notification_id)
    if row is None:
        raise ApiError(404, "NOT_FOUND", "notification not found")
    return OrjsonResponse({"data": inbox.notification_view(row)})


@router.post(
    "/notifications/{notification_id}/read", summary="Mark a notification read", responses=RESOURCE
)
def mark_read(
    notification_id: NotificationId, actor: TeamActor, services: ServicesDep
) -> OrjsonResponse:
    with services.pool.connection() as conn:
        row = inbox.mark_read(conn, actor.team_id, actor.user_id, notification_id)
    if row is None:
        raise ApiError(404, "NOT_FOUND", "notification not found")
    return OrjsonResponse({"data": inbox.notification_view(row)})


@router.get(
    "/notification-preferences",
    summary="The caller's notification preferences: every kind with its effective flags",
    responses=LIST,
)
def get_preferences(actor: TeamActor, services: ServicesDep, _: PreferencesFresh) -> OrjsonResponse:
    with services.pool.connection() as conn:
        kinds = preference_reads.preferences_of(conn, actor.team_id, actor.user_id)
    return OrjsonResponse(
        {
            "data": [
                {**commands.preference_view(kind, channels), "default": not set_}
                for kind, channels, set_ in kinds
            ]
        }
    )


@router.patch(
    "/notification-preferences/{kind}",
    summary="Change the caller's preferences for one kind of notification (fields left out"
    " stay as they are)",
    responses=COMMAND,
)
def set_preference(
    kind: NotificationKind, body: SetNotificationPreference, ctx: CommandCtx, services: ServicesDep
) -> OrjsonResponse:
    return command_response(
        commands.set_notification_preference(services.event_store, ctx, kind.value, body)
    )
