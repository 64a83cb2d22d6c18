"""Prometheus metrics. Projection, fan-out and notification figures are read
from the database at scrape time, so every API process reports the same
cluster-wide truth; the event-store append figures (group commit) and the
process figures are the answering process's own."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from api.dependencies import ServicesDep
from infra.bootstrap import Services
from infra.event_store import head_position
from infra.fanout_status import FanoutStatus, fanout_status
from infra.notification_status import NotificationStatus, notification_status
from projections.catalog import all_projections
from projections.status import ProjectionStatus, statuses

router = APIRouter(tags=["operations"])


def projection_statuses(services: Services) -> tuple[int, list[ProjectionStatus]]:
    with services.pool.connection() as conn:
        head = head_position(conn)
        return head, statuses(conn, all_projections(), head)


def current_fanout_status(services: Services) -> FanoutStatus:
    with services.pool.connection() as conn:
        return fanout_status(conn)


def current_notification_status(services: Services) -> NotificationStatus:
    with services.pool.connection() as conn:
        return notification_status(conn)


class ProjectionCollector(Collector):
    def __init__(self, head: int, rows: list[ProjectionStatus]) -> None:
        self._head = head
        self._rows = rows

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        labels = ["projection", "generation", "state"]
        head = GaugeMetricFamily("chronik_head_position", "Last position in the event log.")
        head.add_metric([], self._head)
        position = GaugeMetricFamily(
            "chronik_projection_position", "Last position applied.", labels=labels
        )
        lag = GaugeMetricFamily(
            "chronik_projection_lag", "Positions behind the head.", labels=labels
        )
        stalled = GaugeMetricFamily(
            "chronik_projection_stalled", "1 while stopped by a handler error.", labels=labels
        )
        applied = CounterMetricFamily(
            "chronik_projection_applied_events", "Events applied.", labels=labels
        )
        for row in self._rows:
            values = [row.name, str(row.generation or ""), row.state]
            position.add_metric(values, row.position)
            lag.add_metric(values, row.lag)
            stalled.add_metric(values, 1 if row.stalled else 0)
            applied.add_metric(values, row.applied_events)
        yield from (head, position, lag, stalled, applied)


class FanoutCollector(Collector):
    def __init__(self, status: FanoutStatus) -> None:
        self._status = status

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self._status
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
        )  # fmt: skip


class NotificationCollector(Collector):
    def __init__(self, status: NotificationStatus) -> None:
        self._status = status

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self._status
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
        )  # fmt: skip


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    head, rows = await run_in_threadpool(projection_statuses, services)
    fanout = await run_in_threadpool(current_fanout_status, services)
    notifications = await run_in_threadpool(current_notification_status, services)
    registry = CollectorRegistry()
    registry.register(ProjectionCollector(head, rows))
    registry.register(FanoutCollector(fanout))
    registry.register(NotificationCollector(notifications))
    # Then this process's own: group commit, Python process and GC figures.
    text = generate_latest(registry) + generate_latest(REGISTRY)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
