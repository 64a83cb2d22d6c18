"""Input rules found by fuzzing, as pure logic: NUL refused in command bodies
at any depth, forged cursors that would not fit a column, and numbers where
an RFC 3339 time is documented."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from api.timestamps import Rfc3339
from commands.models import CreateEntry, CreatePrompt
from projections.pagination import InvalidCursor, decode_cursor, encode_cursor


def forged(kind: str, *values: Any) -> str:
    raw = json.dumps([kind, *values]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "body",
    [
        {"title": "a\x00b"},
        {"title": "ok", "tags": ["fine", "n\x00"]},
        {"title": "ok", "body": "x" * 1000 + "\x00"},
    ],
)
def test_nul_anywhere_in_a_command_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="NUL"):
        CreateEntry.model_validate(body)


def test_nul_in_a_nested_command_is_refused() -> None:
    with pytest.raises(ValidationError, match="NUL"):
        CreatePrompt.model_validate({"text": "t", "schedule": {"cron": "0 9 * * 1-5\x00"}})


def test_deep_input_is_walked_without_recursion() -> None:
    deep: Any = "\x00"
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ValidationError, match="NUL"):
        CreateEntry.model_validate({"title": "t", "tags": deep})


def test_text_without_nul_still_validates() -> None:
    entry = CreateEntry.model_validate({"title": " Monday ", "tags": ["a"]})
    assert entry.title == "Monday"


@pytest.mark.parametrize(
    "cursor",
    [
        forged("entries", 2**63),
        forged("entries", -(2**63) - 1),
        forged("usage", "2025-\x0001"),
    ],
)
def test_forged_cursors_that_fit_no_column_are_invalid(cursor: str) -> None:
    kind = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))[0]
    value_type = str if kind == "usage" else int
    with pytest.raises(InvalidCursor):
        decode_cursor(kind, cursor, value_type)


def test_cursors_at_the_int64_bounds_still_decode() -> None:
    assert decode_cursor("entries", encode_cursor("entries", 2**63 - 1), int) == (2**63 - 1,)
    assert decode_cursor("entries", encode_cursor("entries", -(2**63)), int) == (-(2**63),)


class _When(BaseModel):
    at: Rfc3339


@pytest.mark.parametrize("value", [17489117, "17489117", "1.7e9", 1.5, " 42 "])
def test_a_number_is_no_time(value: Any) -> None:
    with pytest.raises(ValidationError, match="RFC 3339"):
        _When.model_validate({"at": value})


def test_rfc3339_text_and_datetimes_are_times() -> None:
    assert _When.model_validate({"at": "2025-05-01T09:00:00Z"}).at == datetime(
        2025, 5, 1, 9, tzinfo=UTC
    )
    now = datetime.now(UTC)
    assert _When.model_validate({"at": now}).at == now
