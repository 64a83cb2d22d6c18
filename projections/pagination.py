"""Opaque keyset cursors: clients pass them back unchanged and never parse them."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["InvalidCursor", "Page", "decode_cursor", "encode_cursor", "page_of"]

_MAX_CURSOR_CHARS = 200
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class InvalidCursor(ValueError):
    """The cursor was not one of ours (or was made for another list)."""


def encode_cursor(kind: str, *values: int | str) -> str:
    raw = orjson.dumps([kind, *values])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str, *types: type[int] | type[str]) -> tuple[Any, ...]:
    """The values ``encode_cursor(kind, ...)`` put in, checked against ``types``."""
    if len(cursor) > _MAX_CURSOR_CHARS:
        raise InvalidCursor("cursor is too long")
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, orjson.JSONDecodeError, ValueError):
        raise InvalidCursor("cursor is not valid") from None
    if not isinstance(decoded, list) or len(decoded) != len(types) + 1 or decoded[0] != kind:
        raise InvalidCursor("cursor does not belong to this list")
    values = decoded[1:]
    # bool is an int to Python; a cursor never holds one.
    if not all(type(v) is t for v, t in zip(values, types, strict=True)):
        raise InvalidCursor("cursor is not valid")
    # A forged cursor of the right shape must still fit the columns it is
    # compared with (bigint, text): else the database refuses it with a 500.
    if not all(_fits(v) for v in values):
        raise InvalidCursor("cursor is not valid")
    return tuple(values)


def _fits(value: int | str) -> bool:
    if isinstance(value, int):
        return _INT64_MIN <= value <= _INT64_MAX
    return "\x00" not in value


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None


def page_of(rows: list[dict[str, Any]], limit: int, kind: str, *keys: str) -> Page:
    """The page of ``rows`` fetched with ``LIMIT limit + 1``: the extra row only
    tells that another page exists; the cursor holds the last row's ``keys``."""
    if len(rows) <= limit:
        return Page(rows, None)
    rows = rows[:limit]
    return Page(rows, encode_cursor(kind, *(rows[-1][key] for key in keys)))
