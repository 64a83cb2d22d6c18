"""How a command's result is answered: body, status, ETag, Chronik-Position."""

from __future__ import annotations

from typing import Any, TypeVar
from uuid import UUID

from aggregates.base import Actor, Aggregate
from api.errors import ApiError
from api.responses import OrjsonResponse
from commands.unit_of_work import CommandResult, load_in_team
from infra.bootstrap import Services

__all__ = ["command_response", "read_in_team", "resource_response"]

A = TypeVar("A", bound=Aggregate)


def read_in_team(
    services: Services, aggregate_id: UUID, cls: type[A], actor: Actor, what: str
) -> A:
    """A single-resource read, scoped to the caller's team like every command."""
    aggregate = load_in_team(services.event_store, aggregate_id, cls, actor.team_id)
    if aggregate is None:
        raise ApiError(404, "NOT_FOUND", f"{what} not found")
    return aggregate


def resource_response(view: dict[str, Any], version: int) -> OrjsonResponse:
    return OrjsonResponse({"data": view}, headers={"ETag": f'"{version}"'})


def command_response(result: CommandResult) -> OrjsonResponse:
    headers = {"Chronik-Position": str(result.position)}
    if result.version is not None:
        headers["ETag"] = f'"{result.version}"'
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    return OrjsonResponse(result.body(), status_code=result.status_code, headers=headers)
