"""Runs every projection in this process: one supervisor thread per projection
starts a runner for each live generation its code version builds."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Final

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
        while not self._stopping.is_set():
            try:
                self._ensure_runners(projection)
            except psycopg.Error as exc:
                log.warning("projection supervisor cannot reach the database", error=str(exc))
            self._stopping.wait(SUPERVISE_INTERVAL)

    def _ensure_runners(self, projection: Projection) -> None:
        with self._connect() as conn:
            live = registry.generations(conn, projection.name)
            if not any(g.version == projection.version for g in live):
                if any(g.version > projection.version for g in live):
                    log.warning(
                        "a newer version of this projection is live; standing by",
                        projection=projection.name, version=projection.version,
                    )  # fmt: skip
                    return
                live = [registry.create_generation(conn, projection)]
            conn.execute("SET lock_timeout = '2s'")
            registry.drop_retired_schemas(conn)
        for generation in live:
            if generation.version == projection.version:
                self._start_runner(projection, generation.id)

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
