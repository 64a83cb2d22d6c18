"""Offline edits pushed by sync clients: each mutation runs as its own command,
in order, idempotent by its id, and fails on its own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from aggregates.base import DomainError
from aggregates.errors import InvalidValue
from commands import entries, prompts
from commands.context import CommandContext
from commands.models import CreateEntry, CreatePrompt, EditEntry, EditPrompt
from commands.ports import EventStorePort
from commands.unit_of_work import CommandResult

__all__ = ["MAX_MUTATIONS", "Mutation", "PushRequest", "PushResult", "push"]

MAX_MUTATIONS = 100

MutationName = Literal[
    "entry.create", "entry.edit", "entry.delete", "entry.restore",
    "prompt.create", "prompt.edit", "prompt.archive",
]  # fmt: skip


class Mutation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,100}$")] = Field(
        description="The client's id for this mutation; a retry with the same id is a no-op."
    )
    name: MutationName
    args: dict[str, Any] = Field(default_factory=dict)
    base_version: int | None = Field(
        default=None, ge=1, description="The version the edit was made on (like If-Match)."
    )


class PushRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    mutations: list[Mutation] = Field(min_length=1, max_length=MAX_MUTATIONS)


@dataclass(frozen=True, slots=True)
class PushResult:
    results: list[dict[str, Any]]
    # The position to wait for (min_position) to see every applied mutation.
    position: int | None


Handler = Callable[[EventStorePort, CommandContext, dict[str, Any]], CommandResult]


def _target(args: dict[str, Any]) -> tuple[UUID, dict[str, Any]]:
    rest = dict(args)
    try:
        return UUID(str(rest.pop("id"))), rest
    except (KeyError, ValueError):
        raise InvalidValue("args.id must be the UUID of the thing to change", field="id") from None


def _edit_entry(store: EventStorePort, ctx: CommandContext, args: dict[str, Any]) -> CommandResult:
    entry_id, rest = _target(args)
    return entries.edit_entry(store, ctx, entry_id, EditEntry.model_validate(rest))


def _edit_prompt(store: EventStorePort, ctx: CommandContext, args: dict[str, Any]) -> CommandResult:
    prompt_id, rest = _target(args)
    return prompts.edit_prompt(store, ctx, prompt_id, EditPrompt.model_validate(rest))


def _on_target(
    command: Callable[[EventStorePort, CommandContext, UUID], CommandResult],
) -> Handler:
    def handle(store: EventStorePort, ctx: CommandContext, args: dict[str, Any]) -> CommandResult:
        target, rest = _target(args)
        if rest:
            raise InvalidValue("unexpected args", fields=sorted(rest))
        return command(store, ctx, target)

    return handle


HANDLERS: dict[str, Handler] = {
    "entry.create": lambda s, c, a: entries.create_entry(s, c, CreateEntry.model_validate(a)),
    "entry.edit": _edit_entry,
    "entry.delete": _on_target(entries.delete_entry),
    "entry.restore": _on_target(entries.restore_entry),
    "prompt.create": lambda s, c, a: prompts.create_prompt(s, c, CreatePrompt.model_validate(a)),
    "prompt.edit": _edit_prompt,
    "prompt.archive": _on_target(prompts.archive_prompt),
}


def _failure(code: str, message: str, details: dict[str, Any] | None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"status": "failed", "error": error}


def push(store: EventStorePort, ctx: CommandContext, request: PushRequest) -> PushResult:
    """Apply ``request``'s mutations in order. A failed mutation is reported and
    the next ones still run: mutations that depend on it fail on their own
    (e.g. an edit of an entry whose create failed answers NOT_FOUND)."""
    results: list[dict[str, Any]] = []
    positions: list[int] = []
    for mutation in request.mutations:
        # The mutation id is its idempotency key: a client that lost our answer
        # pushes again and gets the first outcome, with nothing appended twice.
        mutation_ctx = replace(
            ctx, idempotency_key=f"sync:{mutation.id}", expected_version=mutation.base_version
        )
        outcome: dict[str, Any]
        try:
            done = HANDLERS[mutation.name](store, mutation_ctx, mutation.args)
        except ValidationError as exc:
            fields = [
                {"field": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()
            ]
            outcome = _failure("VALIDATION_ERROR", "args are invalid", {"fields": fields})
        except DomainError as exc:
            outcome = _failure(exc.code, exc.message, exc.details)
        else:
            positions.append(done.position)
            outcome = {"status": "applied", "position": done.position, "data": done.data}
            if done.replayed:
                outcome["replayed"] = True
        results.append({"id": mutation.id, **outcome})
    return PushResult(results, max(positions, default=None))
