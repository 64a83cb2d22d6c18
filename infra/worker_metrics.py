"""``chronik worker``'s /metrics: the same families as the API's (infra.metrics),
served by the Prometheus client's small HTTP server on its own thread, on
CHRONIK_HTTP_HOST:CHRONIK_WORKER_METRICS_PORT (0: off)."""

from __future__ import annotations

import threading
from typing import Any
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import start_http_server
from psycopg_pool import ConnectionPool

from infra.command_metrics import observe_commands
from infra.db import PostgresTarget
from infra.event_store import EventStore
from infra.metrics import metrics_registry
from infra.projection_wiring import connector
from infra.settings import Settings

__all__ = ["WorkerMetricsServer"]

log = structlog.get_logger(__name__)


class WorkerMetricsServer:
    """Started and stopped with the worker's other services."""

    def __init__(self, settings: Settings, store: EventStore) -> None:
        self._settings = settings
        self._store = store
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int | None:
        """The port listened on (None: not listening)."""
        return None if self._server is None else self._server.server_port

    def start(self) -> None:
        observe_commands()
        wanted = self._settings.worker_metrics_port
        if wanted == 0:
            return
        host = self._settings.http_host
        # A fresh connection per scrape (every 15 s or so) rather than a pool
        # holding one open between scrapes.
        connect = connector(
            PostgresTarget.from_url(self._settings.database_url_value()), name="chronik-metrics"
        )
        registry = metrics_registry(connect, self._pools)
        try:
            self._server, self._thread = start_http_server(wanted, addr=host, registry=registry)
        except OSError as exc:
            # Metrics are not worth a worker outage (e.g. a second worker on the
            # same host with the default port): say so loudly and run on.
            log.error(
                "worker metrics cannot listen; running without /metrics",
                host=host, port=wanted, error=str(exc),
            )  # fmt: skip
            return
        log.info("worker metrics listening", url=f"http://{host}:{self.port}/metrics")

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def _pools(self) -> dict[str, ConnectionPool[Any]]:
        return {"events": self._store.recorder_.datastore.pool}
