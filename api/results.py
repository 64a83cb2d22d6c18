"""How results are answered: a resource with its ETag; a command with its status,
ETag and Chronik-Position."""

from __future__ import annotations

from typing import Any

from api.responses import OrjsonResponse
from commands.unit_of_work import CommandResult

__all__ = ["command_response", "resource_response"]


def resource_response(view: dict[str, Any], version: int) -> OrjsonResponse:
    return OrjsonResponse({"data": view}, headers={"ETag": f'"{version}"'})


def command_response(result: CommandResult) -> OrjsonResponse:
    headers = {"Chronik-Position": str(result.position)}
    if result.version is not None:
        headers["ETag"] = f'"{result.version}"'
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    return OrjsonResponse(result.body(), status_code=result.status_code, headers=headers)
