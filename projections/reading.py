"""Helpers the read models' queries and views share."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

__all__ = ["Conn", "fetch_all", "fetch_one", "iso", "iso_or_none", "where"]

Conn = psycopg.Connection[Any]
Query = str | sql.Composed


def where(optional: Mapping[str, str], params: Mapping[str, Any], *always: str) -> sql.Composed:
    """``always`` and each optional condition whose parameter is set, joined by AND.

    Conditions are fixed SQL written in the modules; only which of them apply
    varies, and every value stays a parameter.
    """
    chosen = [*always, *(c for name, c in optional.items() if params[name] is not None)]
    return sql.SQL(" AND ").join(sql.SQL(c) for c in chosen)


def iso(value: datetime) -> str:
    """ISO 8601 in UTC, as command responses give it: PostgreSQL returns
    timestamptz in the session's TimeZone, which is not ours to rely on."""
    return value.astimezone(UTC).isoformat()


def iso_or_none(value: datetime | None) -> str | None:
    return None if value is None else iso(value)


def fetch_one(conn: Conn, query: Query, params: Mapping[str, Any]) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchone()


def fetch_all(conn: Conn, query: Query, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()
