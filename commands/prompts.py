"""Prompt commands."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from uuid import UUID

from aggregates.prompt import UNCHANGED, Prompt, Schedule, Unchanged
from commands.context import CommandContext
from commands.models import CreatePrompt, EditPrompt, ScheduleIn
from commands.ports import EventStorePort
from commands.unit_of_work import CommandResult, Decision, Session, run_command

__all__ = [
    "archive_prompt",
    "create_prompt",
    "edit_prompt",
    "issue_prompt",
    "prompt_view",
    "scheduler_context",
]


def prompt_view(prompt: Prompt) -> dict[str, Any]:
    schedule, issued = prompt.schedule, prompt.last_issued_at
    return {
        "id": str(prompt.id),
        "text": prompt.text,
        "schedule": None if schedule is None else schedule.model_dump(),
        "archived": prompt.archived,
        "last_issued_at": None if issued is None else issued.isoformat(),
        "version": prompt.version,
        "created_at": prompt.created_on.isoformat(),
        "updated_at": prompt.modified_on.isoformat(),
    }


def _schedule(value: ScheduleIn | None) -> Schedule | None:
    return None if value is None else Schedule(cron=value.cron, timezone=value.timezone)


def create_prompt(
    store: EventStorePort, ctx: CommandContext, command: CreatePrompt
) -> CommandResult:
    prompt_id = command.id or uuid.uuid4()

    def decide(session: Session) -> Decision:
        prompt = session.add(
            Prompt.create(
                ctx.actor, id=prompt_id, text=command.text, schedule=_schedule(command.schedule)
            ),
            id_from_client=command.id is not None,
        )
        return Decision({"id": str(prompt.id), "version": prompt.version}, prompt, 201)

    # The request as the client sent it: a generated id must not make two
    # retries of one request look different to the Idempotency-Key check.
    payload = command.model_dump(mode="json")
    return run_command(store, ctx, "CreatePrompt", payload, decide)


def edit_prompt(
    store: EventStorePort, ctx: CommandContext, prompt_id: UUID, command: EditPrompt
) -> CommandResult:
    schedule: Schedule | Unchanged | None = UNCHANGED
    if command.clear_schedule:
        schedule = None
    elif command.schedule is not None:
        schedule = _schedule(command.schedule)

    def decide(session: Session) -> Decision:
        prompt = session.get(prompt_id, Prompt, what="prompt", precondition=True)
        prompt.edit(ctx.actor, text=command.text, schedule=schedule)
        return Decision(prompt_view(prompt), prompt)

    payload = {"id": str(prompt_id), **command.model_dump(mode="json")}
    return run_command(store, ctx, "EditPrompt", payload, decide)


def archive_prompt(store: EventStorePort, ctx: CommandContext, prompt_id: UUID) -> CommandResult:
    def decide(session: Session) -> Decision:
        prompt = session.get(prompt_id, Prompt, what="prompt", precondition=True)
        prompt.archive(ctx.actor)
        return Decision({"id": str(prompt.id), "version": prompt.version}, prompt)

    return run_command(store, ctx, "ArchivePrompt", {"id": str(prompt_id)}, decide)


def scheduler_context(team_id: UUID, prompt_id: UUID, due_at: datetime) -> CommandContext:
    """The system context the scheduler issues a due time in: no member acts,
    and the correlation id names the prompt and the due time."""
    return CommandContext.for_system(
        team_id, correlation_id=f"prompt-schedule:{prompt_id}:{due_at.isoformat()}"
    )


def issue_prompt(
    store: EventStorePort,
    ctx: CommandContext,
    prompt_id: UUID,
    due_at: datetime,
    *,
    schedule: Schedule | None = None,
) -> CommandResult:
    """Records ``PromptIssued`` for ``due_at`` (a system command: ``ctx`` from
    ``scheduler_context``). ``schedule``: the one ``due_at`` was computed from;
    the prompt is refused if it has another by now.

    Raises the prompt's refusals: ``PromptAlreadyIssued`` is how a scheduler
    that lost the race for a due time learns of it (run_command retries a
    conflicting save on fresh state, where the guard refuses), see Prompt.issue.
    """

    def decide(session: Session) -> Decision:
        prompt = session.get(prompt_id, Prompt, what="prompt")
        prompt.issue(due_at, schedule=schedule)
        view = {"id": str(prompt.id), "version": prompt.version, "due_at": due_at.isoformat()}
        return Decision(view, prompt)

    payload = {"id": str(prompt_id), "due_at": due_at.isoformat()}
    return run_command(store, ctx, "IssuePrompt", payload, decide)
