"""Wakes a claim loop at once when work comes due, not at its next look.

The delivery worker and the email sender each keep one LISTEN connection for
this. Losing it costs only promptness (their claim loops still look when the
next known item is due), so trouble is logged once per kind and the
connection opened again each second.
"""

from __future__ import annotations

import asyncio

import psycopg
import structlog
from psycopg import AsyncConnection, sql

from infra.waiting import first_of

__all__ = ["listen_for_due"]

log = structlog.get_logger(__name__)
RETRY_SECONDS = 1.0


async def listen_for_due(
    conninfo: str,
    channel: str,
    *,
    wake: asyncio.Event,
    stopping: asyncio.Event,
    application_name: str,
) -> None:
    """Sets ``wake`` on every NOTIFY on ``channel`` until ``stopping``, and
    after each (re)connect: what came due while nobody listened is looked at."""
    last_error: str | None = None
    listen = sql.SQL("LISTEN {}").format(sql.Identifier(channel))
    while not stopping.is_set():
        try:
            conn = await AsyncConnection.connect(
                conninfo, autocommit=True, application_name=application_name
            )
            async with conn:
                await conn.execute(listen)
                wake.set()
                last_error = None
                async for _ in conn.notifies():
                    wake.set()
        except (OSError, psycopg.Error) as exc:
            if str(exc) != last_error:  # once per kind of trouble, not every second
                log.warning("cannot listen for due work", channel=channel, error=str(exc))
                last_error = str(exc)
            await first_of(stopping, within=RETRY_SECONDS)
