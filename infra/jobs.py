"""Periodic jobs of the worker, each run by one process at a time (a session
advisory lock is its mutex), so any number of workers may schedule them."""

from __future__ import annotations

import threading
from typing import Final

import psycopg
import structlog

from infra.db import PostgresTarget
from infra.projection_wiring import connector
from infra.settings import Settings
from projections import registry
from projections.sync import SyncProjection, compact

__all__ = ["SyncCompactor", "compact_sync_once"]

log = structlog.get_logger(__name__)

_JOB_LOCK_CLASS: Final = 0x6A6F  # (class, job number)
_SYNC_COMPACTION: Final = 1


def compact_sync_once(settings: Settings) -> int | None:
    """Purge sync tombstones past the retention; None if another process is at it."""
    connect = connector(PostgresTarget.from_url(settings.database_url_value()), name="chronik-jobs")
    with connect() as conn:
        locked = conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (_JOB_LOCK_CLASS, _SYNC_COMPACTION)
        ).fetchone()
        if not (locked and locked[0]):
            return None
        active = next(
            (g for g in registry.generations(conn, SyncProjection.name) if g.state == "active"),
            None,
        )
        if active is None:
            return 0
        retention = settings.sync_tombstone_retention_days * 86_400
        remaining = compact(conn, active.schema, retention)
    log.info("sync tombstones compacted", remaining_changes=remaining)
    return remaining


class SyncCompactor:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sync-compactor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopping.wait(self._settings.sync_compaction_interval):
            try:
                compact_sync_once(self._settings)
            except psycopg.Error as exc:
                log.warning("sync compaction failed; next run retries", error=str(exc))
