"""Journal entry commands, with the team's monthly quota enforced on create."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aggregates.journal_entry import JournalEntry
from aggregates.plans import quota_for
from aggregates.quota import MonthlyQuota
from aggregates.team import Team
from commands.context import CommandContext
from commands.models import CreateEntry, EditEntry
from commands.ports import EventStorePort
from commands.unit_of_work import CommandResult, Decision, Session, run_command

__all__ = ["create_entry", "delete_entry", "edit_entry", "entry_view", "restore_entry"]


def entry_view(entry: JournalEntry) -> dict[str, Any]:
    return {
        "id": str(entry.id),
        "title": entry.title,
        "body": entry.body,
        "tags": list(entry.tags),
        "visibility": entry.visibility.value,
        "prompt_id": str(entry.prompt_id) if entry.prompt_id else None,
        "author_id": str(entry.author_id),
        "version": entry.version,
        "created_at": entry.created_on.isoformat(),
        "updated_at": entry.modified_on.isoformat(),
        "deleted_at": entry.deleted_at.isoformat() if entry.deleted_at else None,
    }


def _month(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m")


def create_entry(store: EventStorePort, ctx: CommandContext, command: CreateEntry) -> CommandResult:
    entry_id = command.id or uuid.uuid4()

    def decide(session: Session) -> Decision:
        team = session.read(ctx.actor.team_id, Team, what="team")
        entry = session.add(
            JournalEntry.create(
                ctx.actor,
                id=entry_id,
                title=command.title,
                body=command.body,
                tags=command.tags,
                visibility=command.visibility,
                prompt_id=command.prompt_id,
            ),
            id_from_client=command.id is not None,
        )
        month = _month(datetime.now(UTC))
        # The quota aggregate is saved with the entry: two creates racing for
        # the last slot conflict on its version, and the loser decides again.
        quota = session.find(MonthlyQuota.id_for(team.id, month), MonthlyQuota)
        if quota is None:
            quota = session.start(MonthlyQuota.start(team.id, month))
        quota.reserve(entry.id, quota_for(team.plan))
        return Decision({"id": str(entry.id), "version": entry.version}, entry, status_code=201)

    # The request as the client sent it: a generated id must not make two
    # retries of one request look different to the Idempotency-Key check.
    payload = command.model_dump(mode="json")
    # A team's new entries all change its month's quota: they take turns.
    team_id = ctx.actor.team_id
    return run_command(store, ctx, "CreateEntry", payload, decide, serialize_on=team_id)


def edit_entry(
    store: EventStorePort, ctx: CommandContext, entry_id: UUID, command: EditEntry
) -> CommandResult:
    def decide(session: Session) -> Decision:
        entry = session.get(entry_id, JournalEntry, what="entry", precondition=True)
        entry.edit(ctx.actor, title=command.title, body=command.body, tags=command.tags)
        if command.visibility is not None:
            entry.change_visibility(ctx.actor, command.visibility)
        return Decision(entry_view(entry), entry)

    payload = {"id": str(entry_id), **command.model_dump(mode="json")}
    return run_command(store, ctx, "EditEntry", payload, decide)


def delete_entry(store: EventStorePort, ctx: CommandContext, entry_id: UUID) -> CommandResult:
    def decide(session: Session) -> Decision:
        entry = session.get(entry_id, JournalEntry, what="entry", precondition=True)
        entry.delete(ctx.actor, deleted_at=datetime.now(UTC))
        return Decision({"id": str(entry.id), "version": entry.version}, entry)

    return run_command(store, ctx, "DeleteEntry", {"id": str(entry_id)}, decide)


def restore_entry(store: EventStorePort, ctx: CommandContext, entry_id: UUID) -> CommandResult:
    def decide(session: Session) -> Decision:
        entry = session.get(entry_id, JournalEntry, what="entry", precondition=True)
        entry.restore(ctx.actor)
        return Decision({"id": str(entry.id), "version": entry.version}, entry)

    return run_command(store, ctx, "RestoreEntry", {"id": str(entry_id)}, decide)
