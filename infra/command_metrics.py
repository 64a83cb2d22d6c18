"""Command outcomes as a Prometheus counter, fed by the command layer's
observer seam (commands.observers), in every process that runs commands."""

from __future__ import annotations

from typing import Final

import psycopg
from eventsourcing import persistence as es_persistence
from prometheus_client import Counter
from psycopg_pool import PoolTimeout

from aggregates.base import DomainError
from commands.observers import add_command_observer
from commands.ports import Unavailable

__all__ = ["COMMANDS", "command_code", "observe_commands", "record_command"]

COMMANDS: Final = Counter(
    "chronik_commands",
    "Commands this process ran, by name (as the audit trail records it) and outcome:"
    " ok, or the error envelope's code.",
    ["command", "code"],
)

# The failures the API answers 503 UNAVAILABLE (api.errors does the same mapping).
_UNAVAILABLE: Final = (
    Unavailable,
    psycopg.OperationalError,
    es_persistence.OperationalError,
    es_persistence.InterfaceError,
    PoolTimeout,
)


def command_code(error: Exception | None) -> str:
    """The code a client is answered with: ``ok``, a domain code, UNAVAILABLE or INTERNAL."""
    if error is None:
        return "ok"
    if isinstance(error, DomainError):
        return error.code
    if isinstance(error, _UNAVAILABLE):
        return "UNAVAILABLE"
    return "INTERNAL"


def record_command(name: str, error: Exception | None) -> None:
    COMMANDS.labels(name, command_code(error)).inc()


def observe_commands() -> None:
    """Counts this process's commands from now on; idempotent."""
    add_command_observer(record_command)
