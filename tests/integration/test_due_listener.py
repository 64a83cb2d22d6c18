"""The LISTEN connection that wakes the delivery worker's and the email
sender's claim loops, against a real PostgreSQL: a NOTIFY wakes, and a lost
connection is opened again (waking once more, for what came due meanwhile)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import LiteralString

import pytest
from psycopg import AsyncConnection
from structlog.testing import capture_logs

from infra.db import PostgresTarget
from infra.due_listener import listen_for_due
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

CHANNEL = "chronik_test_due"
APPLICATION = "chronik-test-listener"


@contextlib.asynccontextmanager
async def listening(conninfo: str, wake: asyncio.Event) -> AsyncIterator[None]:
    stopping = asyncio.Event()
    task = asyncio.create_task(
        listen_for_due(
            conninfo, CHANNEL, wake=wake, stopping=stopping, application_name=APPLICATION
        )
    )
    try:
        yield
    finally:
        stopping.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _execute(conninfo: str, query: LiteralString, *params: str) -> int:
    async with await AsyncConnection.connect(conninfo, autocommit=True) as conn:
        cur = await conn.execute(query, params)
        return cur.rowcount


async def _notify(conninfo: str) -> None:
    await _execute(conninfo, "SELECT pg_notify(%s, '')", CHANNEL)


async def _listeners(conninfo: str) -> int:
    async with await AsyncConnection.connect(conninfo, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            (APPLICATION,),
        )
        row = await cur.fetchone()
        return 0 if row is None else int(row[0])


async def test_a_notify_wakes_and_a_lost_connection_is_opened_again(database_url: str) -> None:
    conninfo = PostgresTarget.from_url(database_url).conninfo()
    wake = asyncio.Event()
    with capture_logs() as logs:
        async with listening(conninfo, wake):
            await eventually(wake.is_set, what="a wake on connecting")
            wake.clear()
            await _notify(conninfo)
            await eventually(wake.is_set, what="a wake on NOTIFY")
            wake.clear()

            terminate = (
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND datname = current_database()"
            )
            assert await _execute(conninfo, terminate, APPLICATION) == 1
            await eventually(wake.is_set, what="a wake on connecting again", within=10)

            async def listening_again() -> bool:
                return await _listeners(conninfo) == 1

            await eventually(listening_again, what="one listener again")
            wake.clear()
            await _notify(conninfo)
            await eventually(wake.is_set, what="a wake on NOTIFY after reconnecting")
    warnings = [entry for entry in logs if entry["event"] == "cannot listen for due work"]
    assert len(warnings) == 1
    assert warnings[0]["channel"] == CHANNEL
