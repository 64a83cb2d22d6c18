"""Runs every projection in this process: one supervisor thread per projection
starts a runner for each live generation its code version builds."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Final

import psycopg
import structlog

from projections import registry
from projections.base import Projection
from projections.runner import Connect, EventSource, GenerationRunner, RunnerConfig
from projections.wakeups import Wakeups

__all__ = ["ProjectionWorker"]

log = structlog.get_logger(__name__)

SUPERVISE_INTERVAL: Final = 2.0


class ProjectionWorker:
    def __init__(
        self,
        projections: Sequence[Projection],
        *,
        connect: Connect,
        source: EventSource,
        config: RunnerConfig,
        wakeups: Wakeups,
    ) -> None:
        self.projections = projections
        self._connect = connect
        self._source = source
        self._config = config
        self._wakeups = wakeups
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.runners: dict[int, GenerationRunner] = {}
        self._runner_threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        self._wakeups.start()
        for projection in self.projections:
            thread = threading.Thread(
                target=self._supervise, args=(projection,), name=f"projection-{projection.name}"
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wakeups.stop(wait=False)
        self._wakeups.wake_all()
        with self._lock:
            threads = [*self._threads, *self._runner_threads.values()]
        for thread in threads:
            thread.join(timeout)
        self._wakeups.stop()

    def _supervise(self, projection: Projection) -> None:
        """Looks every few seconds for generations to run, on one connection
        kept for the purpose (no connection churn while idle)."""
        outdated = False
        while not self._stopping.is_set():
            try:
                with self._connect() as conn:
                    conn.execute("SET lock_timeout = '2s'")
                    while not self._stopping.is_set():
                        live = self._live_generations(conn, projection)
                        if live is None and not outdated:
                            log.warning(
                                "a newer version of this projection is live; standing by",
                                projection=projection.name, version=projection.version,
                            )  # fmt: skip
                        outdated = live is None
                        for generation in live or []:
                            self._start_runner(projection, generation.id)
                        self._stopping.wait(SUPERVISE_INTERVAL)
            except psycopg.Error as exc:
                log.warning("projection supervisor cannot reach the database", error=str(exc))
                self._stopping.wait(SUPERVISE_INTERVAL)

    @staticmethod
    def _live_generations(
        conn: psycopg.Connection[Any], projection: Projection
    ) -> list[registry.Generation] | None:
        """The generations this code version runs (creating the first one);
        None when only newer code's generations are live."""
        live = registry.generations(conn, projection.name)
        mine = [g for g in live if g.version == projection.version]
        if not mine:
            if any(g.version > projection.version for g in live):
                return None
            mine = [registry.create_generation(conn, projection)]
        registry.drop_retired_schemas(conn)
        return mine

    def _run(self, runner: GenerationRunner, wake: threading.Event) -> None:
        try:
            runner.run()
        finally:
            self._wakeups.unsubscribe(wake)

    def _start_runner(self, projection: Projection, generation_id: int) -> None:
        with self._lock:
            running = self._runner_threads.get(generation_id)
            if running is not None and running.is_alive():
                return
            wake = self._wakeups.subscribe()
            runner = GenerationRunner(
                projection,
                generation_id,
                connect=self._connect,
                source=self._source,
                config=self._config,
                wake=wake,
                stopping=self._stopping,
            )
            thread = threading.Thread(
                target=self._run,
                args=(runner, wake),
                name=f"projection-{projection.name}-{generation_id}",
            )
            self.runners[generation_id] = runner
            self._runner_threads[generation_id] = thread
            thread.start()
