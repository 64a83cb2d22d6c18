"""How a command's result is answered: body, status, ETag, Chronik-Position."""

from __future__ import annotations

from api.responses import OrjsonResponse
from commands.unit_of_work import CommandResult

__all__ = ["command_response"]


def command_response(result: CommandResult) -> OrjsonResponse:
    headers = {"Chronik-Position": str(result.position)}
    if result.version is not None:
        headers["ETag"] = f'"{result.version}"'
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    return OrjsonResponse(result.body(), status_code=result.status_code, headers=headers)
