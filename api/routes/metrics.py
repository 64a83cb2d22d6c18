"""Prometheus metrics. Projection figures are read from the registry at scrape
time, so every API process reports the same cluster-wide truth."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from api.dependencies import ServicesDep
from infra.bootstrap import Services
from infra.event_store import head_position
from projections.catalog import all_projections
from projections.status import ProjectionStatus, statuses

router = APIRouter(tags=["operations"])


def projection_statuses(services: Services) -> tuple[int, list[ProjectionStatus]]:
    with services.pool.connection() as conn:
        head = head_position(conn)
        return head, statuses(conn, all_projections(), head)


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


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    head, rows = await run_in_threadpool(projection_statuses, services)
    registry = CollectorRegistry()
    registry.register(ProjectionCollector(head, rows))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
