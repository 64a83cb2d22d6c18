"""The one place that builds connections, pools and clients from settings."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

import structlog
from nats.aio.client import Client as NatsClient
from psycopg_pool import ConnectionPool

from commands.auth import Authenticator
from infra.db import PostgresTarget, open_pool
from infra.event_store import EventStore, open_event_store
from infra.messaging import close_nats, connect_nats
from infra.settings import Settings

__all__ = ["Services", "open_services"]

log = structlog.get_logger(__name__)


@dataclass
class Services:
    settings: Settings
    target: PostgresTarget
    pool: ConnectionPool
    nats: NatsClient | None = field(default=None)
    _event_store: EventStore | None = field(default=None, repr=False)
    _event_store_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _nats_task: asyncio.Task[None] | None = field(default=None, repr=False)
    _authenticator: Authenticator | None = field(default=None, repr=False)
    # A long-lived process serving commands: cached aggregates are kept current
    # from the log's notifications instead of a query per load.
    follow_changes: bool = False

    @property
    def event_store(self) -> EventStore:
        """Built on first use: the library reads type information from the
        database when it starts, and a process must be able to start (and
        report not ready) while the database is down."""
        if self._event_store is None:
            with self._event_store_lock:
                if self._event_store is None:
                    self._event_store = open_event_store(
                        self.target,
                        pool_size=self.settings.db_pool_size,
                        group_commit_max=self.settings.group_commit_max,
                        follow_changes=self.follow_changes,
                    )
        return self._event_store

    @property
    def authenticator(self) -> Authenticator:
        if self._authenticator is None:
            self._authenticator = Authenticator(self.event_store)
        return self._authenticator

    def pools(self) -> dict[str, ConnectionPool[Any]]:
        """This process's database pools by name, for metrics. The event store's
        only once built: a scrape must not build it."""
        pools: dict[str, ConnectionPool[Any]] = {"reads": self.pool}
        if self._event_store is not None:
            pools["events"] = self._event_store.recorder_.datastore.pool
        return pools

    async def connect_messaging(self, *, name: str, wait: float = 5.0) -> None:
        """Connect to NATS, waiting a little; if it is down, keep trying in the
        background, so the API serves commands (and reports not ready) meanwhile."""
        self._nats_task = asyncio.create_task(self._connect_until_connected(name))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._nats_task), wait)

    async def _connect_until_connected(self, name: str) -> None:
        delay = 0.5
        while self.nats is None:
            try:
                self.nats = await connect_nats(self.settings, name=name)
            except Exception as exc:  # noqa: BLE001 - any failure: retry later
                log.warning("NATS unreachable; retrying", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def aclose(self) -> None:
        if self._nats_task is not None:
            self._nats_task.cancel()
            await asyncio.wait([self._nats_task], timeout=5)
        if self.nats is not None:
            # Closed even while NATS is away, so the pool below is closed too.
            await close_nats(self.nats)
            self.nats = None
        self.close()

    def close(self) -> None:
        self.pool.close()
        if self._event_store is not None:
            self._event_store.close()


def open_services(settings: Settings, *, follow_changes: bool = False) -> Services:
    target = PostgresTarget.from_url(settings.database_url_value())
    log.info("opening database", database=target.redacted())
    return Services(
        settings=settings,
        target=target,
        pool=open_pool(target, size=settings.db_pool_size, name="reads"),
        follow_changes=follow_changes,
    )
