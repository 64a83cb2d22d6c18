"""Command outcomes: the observer seam in the command layer and the codes the
counter records (no server, no database)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from prometheus_client import REGISTRY

from aggregates.base import Forbidden, NotFound
from commands.errors import VersionConflict
from commands.observers import add_command_observer, command_finished, remove_command_observer
from commands.ports import Unavailable
from infra.command_metrics import command_code, observe_commands, record_command


def test_codes_are_the_envelope_codes() -> None:
    assert command_code(None) == "ok"
    assert command_code(NotFound("entry not found")) == "NOT_FOUND"
    assert command_code(VersionConflict("stale")) == "VERSION_CONFLICT"
    assert command_code(Unavailable("down")) == "UNAVAILABLE"
    assert command_code(psycopg.OperationalError("down")) == "UNAVAILABLE"
    assert command_code(RuntimeError("bug")) == "INTERNAL"


@pytest.fixture
def seen() -> Iterator[list[tuple[str, str]]]:
    calls: list[tuple[str, str]] = []

    def observer(name: str, error: Exception | None) -> None:
        calls.append((name, command_code(error)))

    add_command_observer(observer)
    add_command_observer(observer)  # idempotent: counted once
    yield calls
    remove_command_observer(observer)


def test_observers_hear_each_outcome_once(seen: list[tuple[str, str]]) -> None:
    command_finished("CreateEntry", None)
    command_finished("EditEntry", NotFound("entry not found"))
    assert seen == [("CreateEntry", "ok"), ("EditEntry", "NOT_FOUND")]


def test_a_failing_observer_never_fails_the_command(seen: list[tuple[str, str]]) -> None:
    def broken(name: str, error: Exception | None) -> None:
        raise RuntimeError("metrics bug")

    add_command_observer(broken)
    try:
        command_finished("CreateEntry", None)
    finally:
        remove_command_observer(broken)
    assert seen == [("CreateEntry", "ok")]


def test_the_counter_counts_by_name_and_code() -> None:
    labels = {"command": "ArchivePrompt", "code": "FORBIDDEN"}
    before = REGISTRY.get_sample_value("chronik_commands_total", labels) or 0.0
    observe_commands()
    observe_commands()  # twice, as several apps in one process would
    command_finished("ArchivePrompt", NotFound("x"))  # NOT_FOUND: another series
    record_command("ArchivePrompt", Forbidden("not yours"))
    assert REGISTRY.get_sample_value("chronik_commands_total", labels) == before + 1
