"""Start what the settings do not point at; stop it all on exit."""

from __future__ import annotations

import fcntl
import os
from types import TracebackType
from typing import IO, Self

import structlog
from pydantic import SecretStr

from infra.devstack.nats import EmbeddedNats
from infra.devstack.postgres import EmbeddedPostgres
from infra.settings import Settings

__all__ = ["DevStack", "StackAlreadyRunning"]

log = structlog.get_logger(__name__)


class StackAlreadyRunning(Exception):
    pass


class DevStack:
    """Embedded PostgreSQL and NATS for a data folder, one owner at a time.

    A lock file in the data folder makes a second ``chronik dev`` on the same
    folder stop with a clear message instead of starting a second server on
    the same files.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.postgres: EmbeddedPostgres | None = None
        self.nats: EmbeddedNats | None = None
        self._lock_file: IO[str] | None = None

    def _lock(self) -> None:
        # As root, the PostgreSQL service user must pass through this folder
        # (not list it) to reach its own data inside: 0711, and only here.
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o711 if os.geteuid() == 0 else 0o700)
        (self.data_dir / "logs").mkdir(exist_ok=True, mode=0o700)
        lock_file = (self.data_dir / "stack.lock").open("a+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "another process"
            lock_file.close()
            raise StackAlreadyRunning(
                f"the data folder {self.data_dir} is in use by pid {holder}; stop it first "
                "or set CHRONIK_DATA_DIR to another folder"
            ) from None
        lock_file.truncate(0)
        lock_file.write(str(os.getpid()))
        lock_file.flush()
        self._lock_file = lock_file

    def start(self) -> Settings:
        """Start what is needed; returns settings that point at the running servers."""
        if self.settings.database_url is not None and self.settings.nats_url is not None:
            return self.settings
        self._lock()
        updates: dict[str, object] = {}
        try:
            if self.settings.database_url is None:
                self.postgres = EmbeddedPostgres(self.data_dir)
                self.postgres.start()
                updates["database_url"] = SecretStr(self.postgres.url)
                log.info("embedded PostgreSQL started", url=self.postgres.url)
            if self.settings.nats_url is None:
                self.nats = EmbeddedNats(self.data_dir)
                self.nats.start()
                updates["nats_url"] = self.nats.url
                log.info("embedded NATS started", url=self.nats.url)
        except BaseException:
            self.stop()
            raise
        return self.settings.model_copy(update=updates)

    def stop(self) -> None:
        for server in (self.nats, self.postgres):
            if server is not None:
                server.stop()
        self.nats = self.postgres = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
