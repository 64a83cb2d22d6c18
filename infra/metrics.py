"""The Prometheus families the API and the worker both serve at /metrics.

Projection, fan-out, webhook and notification figures are read from the
database at scrape time, so every process reports the same cluster-wide
truth; pool usage, command outcomes, group commit and the Python process
figures are the answering process's own (the default registry)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Final

import psycopg
import structlog
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg.rows import class_row
from psycopg_pool import ConnectionPool, PoolTimeout

from infra.event_store import head_position
from infra.fanout_status import FanoutStatus, fanout_status
from infra.notification_status import NotificationStatus, notification_status
from projections.catalog import all_projections
from projections.status import ProjectionStatus, statuses

__all__ = [
    "DatabaseCollector",
    "PoolCollector",
    "metrics_registry",
    "render",
]

log = structlog.get_logger(__name__)

Connection = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]
Pools = Callable[[], Mapping[str, ConnectionPool[Any]]]

# Rows are never deleted, so these counts are totals since the start. A
# delivery's status can go back to pending (resend, recover): a gauge; an
# attempt's outcome never changes: a counter.
SELECT_DELIVERY_COUNTS: Final = """
SELECT
    (SELECT count(*) FILTER (WHERE status = 'pending') FROM webhook_deliveries) AS pending,
    (SELECT count(*) FILTER (WHERE status = 'succeeded') FROM webhook_deliveries) AS succeeded,
    (SELECT count(*) FILTER (WHERE status = 'failed') FROM webhook_deliveries) AS failed,
    (SELECT count(*) FILTER (WHERE status = 'canceled') FROM webhook_deliveries) AS canceled,
    (SELECT count(*) FILTER (WHERE status_code BETWEEN 200 AND 299) FROM webhook_attempts)
        AS attempts_succeeded,
    (SELECT count(*) FILTER (WHERE status_code IS NULL OR status_code NOT BETWEEN 200 AND 299)
        FROM webhook_attempts) AS attempts_failed
"""


@dataclass(frozen=True, slots=True)
class DeliveryCounts:
    pending: int
    succeeded: int
    failed: int
    canceled: int
    attempts_succeeded: int
    attempts_failed: int


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    head: int
    projections: list[ProjectionStatus]
    fanout: FanoutStatus
    deliveries: DeliveryCounts
    notifications: NotificationStatus


def read_cluster_status(conn: psycopg.Connection[Any]) -> ClusterStatus:
    head = head_position(conn)
    with conn.cursor(row_factory=class_row(DeliveryCounts)) as cur:
        deliveries = cur.execute(SELECT_DELIVERY_COUNTS).fetchone()
    assert deliveries is not None
    return ClusterStatus(
        head=head,
        projections=statuses(conn, all_projections(), head),
        fanout=fanout_status(conn),
        deliveries=deliveries,
        notifications=notification_status(conn),
    )


def _projection_families(head: int, rows: list[ProjectionStatus]) -> Iterator[Metric]:
    labels = ["projection", "generation", "state"]
    head_family = GaugeMetricFamily("chronik_head_position", "Last position in the event log.")
    head_family.add_metric([], head)
    position = GaugeMetricFamily(
        "chronik_projection_position", "Last position applied.", labels=labels
    )
    lag = GaugeMetricFamily("chronik_projection_lag", "Positions behind the head.", labels=labels)
    stalled = GaugeMetricFamily(
        "chronik_projection_stalled", "1 while stopped by a handler error.", labels=labels
    )
    applied = CounterMetricFamily(
        "chronik_projection_applied_events", "Events applied.", labels=labels
    )
    for row in rows:
        values = [row.name, str(row.generation or ""), row.state]
        position.add_metric(values, row.position)
        lag.add_metric(values, row.lag)
        stalled.add_metric(values, 1 if row.stalled else 0)
        applied.add_metric(values, row.applied_events)
    yield from (head_family, position, lag, stalled, applied)


def _fanout_families(s: FanoutStatus) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "chronik_relay_position",
        "Last position published to JetStream.",
        value=s.relay_position or 0,
    )
    yield GaugeMetricFamily(
        "chronik_relay_lag", "Positions the relay is behind the head.", value=s.relay_lag
    )
    yield GaugeMetricFamily(
        "chronik_relay_failing",
        "1 while the relay cannot publish (NATS down).",
        value=1 if s.relay_error else 0,
    )
    yield CounterMetricFamily(
        "chronik_relay_published_events", "Events published.", value=s.relay_published
    )
    yield GaugeMetricFamily(
        "chronik_webhook_deliveries_pending", "Deliveries not yet final.", value=s.pending
    )
    yield GaugeMetricFamily(
        "chronik_webhook_oldest_due_seconds",
        "How long the longest-waiting due delivery has waited.",
        value=s.oldest_due_seconds,
    )
    yield GaugeMetricFamily(
        "chronik_webhook_endpoints_failing",
        "Endpoints whose last attempt failed.",
        value=s.endpoints_failing,
    )


def _delivery_families(d: DeliveryCounts) -> Iterator[Metric]:
    deliveries = GaugeMetricFamily(
        "chronik_webhook_deliveries",
        "Webhook deliveries by current status (a resend makes a final one pending again).",
        labels=["status"],
    )
    for status in ("pending", "succeeded", "failed", "canceled"):
        deliveries.add_metric([status], getattr(d, status))
    attempts = CounterMetricFamily(
        "chronik_webhook_delivery_attempts",
        "Webhook delivery attempts by outcome: succeeded (2xx) or failed.",
        labels=["outcome"],
    )
    attempts.add_metric(["succeeded"], d.attempts_succeeded)
    attempts.add_metric(["failed"], d.attempts_failed)
    yield from (deliveries, attempts)


def _notification_families(s: NotificationStatus) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "chronik_notifications_created",
        "Inbox notifications created.",
        value=s.notifications_created,
    )
    yield CounterMetricFamily("chronik_emails_sent", "Emails sent.", value=s.emails_sent)
    yield CounterMetricFamily(
        "chronik_emails_failed",
        "Emails given up on after their last retry.",
        value=s.emails_failed,
    )
    yield CounterMetricFamily(
        "chronik_email_attempts_failed",
        "Email attempts that failed (each retry counts).",
        value=s.email_attempts_failed,
    )
    yield GaugeMetricFamily(
        "chronik_emails_pending", "Emails not yet sent or given up on.", value=s.emails_pending
    )
    yield GaugeMetricFamily(
        "chronik_email_oldest_due_seconds",
        "How long the longest-waiting due email has waited.",
        value=s.email_oldest_due_seconds,
    )


class DatabaseCollector(Collector):
    """The cluster-wide families, read on a connection from ``connection`` at
    each scrape. Blocking: scrape from a worker thread, not an event loop."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def collect(self) -> Iterator[Metric]:
        try:
            with self._connection() as conn:
                status = read_cluster_status(conn)
        except (psycopg.Error, PoolTimeout) as exc:
            # The process's own figures (pools among them) matter most during
            # an outage: serve them, and say the cluster-wide ones are missing.
            log.warning("metrics cannot read the database", error=str(exc))
            yield _database_up(0)
            return
        yield _database_up(1)
        yield from _projection_families(status.head, status.projections)
        yield from _fanout_families(status.fanout)
        yield from _delivery_families(status.deliveries)
        yield from _notification_families(status.notifications)


def _database_up(value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "chronik_database_up",
        "1 when this scrape read the database; at 0 the cluster-wide families are missing.",
        value=value,
    )


class PoolCollector(Collector):
    """psycopg_pool's figures for this process's connection pools, by pool."""

    def __init__(self, pools: Pools) -> None:
        self._pools = pools

    def collect(self) -> Iterator[Metric]:
        label = ["pool"]
        gauges: dict[str, GaugeMetricFamily] = {
            "pool_size": GaugeMetricFamily(
                "chronik_db_pool_connections", "Connections open (idle or in use).", labels=label
            ),
            "pool_available": GaugeMetricFamily(
                "chronik_db_pool_idle_connections", "Connections idle in the pool.", labels=label
            ),
            "pool_max": GaugeMetricFamily(
                "chronik_db_pool_max_connections", "The pool's maximum size.", labels=label
            ),
            "requests_waiting": GaugeMetricFamily(
                "chronik_db_pool_waiting_requests",
                "Requests waiting for a connection now.",
                labels=label,
            ),
        }
        counters: dict[str, CounterMetricFamily] = {
            "requests_num": CounterMetricFamily(
                "chronik_db_pool_requests", "Connections asked of the pool.", labels=label
            ),
            "requests_queued": CounterMetricFamily(
                "chronik_db_pool_requests_queued",
                "Requests that had to wait for a connection.",
                labels=label,
            ),
            "requests_errors": CounterMetricFamily(
                "chronik_db_pool_requests_failed",
                "Requests that got no connection (timed out or refused).",
                labels=label,
            ),
        }
        for name, pool in sorted(self._pools().items()):
            # get_stats, not pop_stats: the counters keep counting from the start.
            stats = pool.get_stats()
            for key, gauge in gauges.items():
                gauge.add_metric([name], stats.get(key, 0))
            for key, counter in counters.items():
                counter.add_metric([name], stats.get(key, 0))
        yield from gauges.values()
        yield from counters.values()


class _ProcessOwn(Collector):
    """This process's default registry: group commit, commands, HTTP, and the
    Python client's process_* and python_gc_* figures."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def metrics_registry(connection: Connection, pools: Pools) -> CollectorRegistry:
    """What /metrics serves, in the API and in the worker."""
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(connection))
    registry.register(PoolCollector(pools))
    registry.register(_ProcessOwn())
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition; blocking (it reads the database)."""
    return generate_latest(registry)
