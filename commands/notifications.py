"""Notification preference commands: a member sets their own, kind by kind."""

from __future__ import annotations

from typing import Any

from aggregates.notification_preferences import (
    Channels,
    NotificationKind,
    NotificationPreferences,
    parse_kind,
)
from commands.context import CommandContext
from commands.models import SetNotificationPreference
from commands.ports import EventStorePort
from commands.unit_of_work import CommandResult, Decision, Session, run_command

__all__ = ["preference_view", "set_notification_preference"]


def preference_view(kind: NotificationKind | str, channels: Channels) -> dict[str, Any]:
    return {
        "kind": str(kind),
        "inbox": channels.inbox,
        "email": channels.email,
        "digest": channels.digest,
        "email_mode": channels.email_mode,
    }


def set_notification_preference(
    store: EventStorePort, ctx: CommandContext, kind: str, command: SetNotificationPreference
) -> CommandResult:
    """Changes the caller's own flags of ``kind``; nobody sets another member's."""
    chosen = parse_kind(kind)
    actor = ctx.actor
    flags = {"inbox": command.inbox, "email": command.email, "digest": command.digest}

    def decide(session: Session) -> Decision:
        found = session.find(
            NotificationPreferences.id_for(actor.team_id, actor.user_id), NotificationPreferences
        )
        if found is not None:
            found.change(actor, chosen, **flags)
            return Decision(preference_view(chosen, found.channels(chosen)), found)
        # Never set before: the aggregate is only started (and saved) when the
        # command changes something, so asking for the defaults records nothing.
        started = NotificationPreferences.start(actor)
        started.change(actor, chosen, **flags)
        if len(started.pending_events) == 1:
            return Decision(preference_view(chosen, started.channels(chosen)), None)
        session.start(started)
        return Decision(preference_view(chosen, started.channels(chosen)), started)

    payload = {"kind": chosen.value, **command.model_dump(mode="json")}
    return run_command(store, ctx, "SetNotificationPreference", payload, decide)
