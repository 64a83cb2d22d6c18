"""After a short run (a team, entries, a webhook delivery, a sync stream and a
pull) both the API's and the worker's /metrics carry every family the
operations guide lists, and HTTP routes are labelled by their template."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from ipaddress import ip_network
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from api.routes import sync_stream
from infra.db import PostgresTarget
from infra.devstack.processes import free_port, wait_until
from infra.event_store import open_event_store
from infra.operations import run_worker
from infra.settings import Settings
from infra.worker_metrics import WorkerMetricsServer
from tests.e2e.conftest import Api
from tests.webhook_receivers import receiver

STREAM_ROUTE = "/v1/teams/{team_id}/sync/stream"

# Both processes: read from the database at scrape time, or the process's own.
SHARED = {
    "chronik_database_up",
    "chronik_head_position",
    "chronik_projection_position",
    "chronik_projection_lag",
    "chronik_projection_stalled",
    "chronik_projection_applied_events",
    "chronik_relay_position",
    "chronik_relay_lag",
    "chronik_relay_failing",
    "chronik_relay_published_events",
    "chronik_webhook_deliveries",
    "chronik_webhook_delivery_attempts",
    "chronik_webhook_deliveries_pending",
    "chronik_webhook_oldest_due_seconds",
    "chronik_webhook_endpoints_failing",
    "chronik_notifications_created",
    "chronik_emails_sent",
    "chronik_emails_failed",
    "chronik_email_attempts_failed",
    "chronik_emails_pending",
    "chronik_email_oldest_due_seconds",
    "chronik_db_pool_connections",
    "chronik_db_pool_idle_connections",
    "chronik_db_pool_max_connections",
    "chronik_db_pool_waiting_requests",
    "chronik_db_pool_requests",
    "chronik_db_pool_requests_queued",
    "chronik_db_pool_requests_failed",
    "chronik_commands",
    "chronik_event_store_append_seconds",
    "chronik_event_store_append_batch_commands",
    "process_cpu_seconds",
    "python_gc_collections",
}
API_ONLY = {
    "chronik_http_requests",
    "chronik_http_request_duration_seconds",
    "chronik_sse_connections",
}


@pytest.fixture
def api_settings(api_settings: Settings) -> Settings:
    return api_settings.model_copy(
        update={
            "webhook_allowed_networks": [ip_network("127.0.0.0/8")],
            "worker_metrics_port": free_port(),
        }
    )


@pytest.fixture
def worker_process(api_settings: Settings) -> Iterator[str]:
    """The fan-out part of `chronik worker`, with its /metrics listener; its URL."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_worker, args=(api_settings, stop), kwargs={"roles": ("fanout",)}
    )
    thread.start()
    url = f"http://127.0.0.1:{api_settings.worker_metrics_port}/metrics"
    try:
        yield url
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive(), "the worker did not stop"


@pytest.fixture(autouse=True)
def _fast_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    # A closed stream is noticed at the next heartbeat: soon.
    monkeypatch.setattr(sync_stream, "HEARTBEAT_SECONDS", 0.2)


def _samples(text: str) -> dict[str, list[Sample]]:
    """Family name -> samples (counters by their name without ``_total``)."""
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def _value(families: dict[str, list[Sample]], name: str, **labels: str) -> float | None:
    family = name.removesuffix("_total").removesuffix("_count")
    for sample in families.get(family, []):
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


def _delta(
    before: dict[str, list[Sample]], after: dict[str, list[Sample]], name: str, **labels: str
) -> float:
    return (_value(after, name, **labels) or 0.0) - (_value(before, name, **labels) or 0.0)


def _scrape(url: str) -> dict[str, list[Sample]]:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return _samples(response.text)


def _short_run(api: Api, team: dict[str, Any], webhook_url: str) -> None:
    owner = api.client(team["owner_key"])
    base = f"/v1/teams/{team['id']}"
    registered = owner.post(f"{base}/webhooks", json={"url": webhook_url, "event_types": []})
    assert registered.status_code == 201, registered.text
    for n in range(3):
        created = owner.post(f"{base}/entries", json={"title": f"entry {n}", "visibility": "team"})
        assert created.status_code == 201, created.text
    missing = owner.patch(f"{base}/entries/00000000-0000-4000-8000-000000000000", json={})
    assert missing.status_code == 404, missing.text
    pulled = owner.get(f"{base}/sync")
    assert pulled.status_code == 200, pulled.text


def test_api_and_worker_expose_every_family(api: Api, worker_process: str) -> None:
    team = api.create_team()
    plain = api.client(session=False)
    # Counters are per process, and tests share one: compare with before.
    before = _samples(plain.get("/metrics").text)
    with receiver() as hooks:
        _short_run(api, team, hooks.url)
        wait_until(lambda: len(hooks.received()) >= 3, timeout=30, what="webhook deliveries")

    with (
        httpx.Client(base_url=api.base_url, timeout=10) as streaming,
        streaming.stream(
            "GET",
            f"/v1/teams/{team['id']}/sync/stream",
            headers={"Authorization": f"Bearer {team['owner_key']}"},
        ) as stream,
    ):
        assert stream.status_code == 200
        # Kept: a generator dropped unfinished closes the response.
        chunks = stream.iter_raw()
        next(chunks)  # the headers and the first chunk are out
        during = _samples(plain.get("/metrics").text)
        assert _value(during, "chronik_sse_connections", route=STREAM_ROUTE) == 1

    def stream_closed() -> bool:
        families = _samples(plain.get("/metrics").text)
        return _value(families, "chronik_sse_connections", route=STREAM_ROUTE) == 0

    wait_until(stream_closed, timeout=10, what="the closed stream to be uncounted")

    # Succeeded attempts are final before the receiver saw them all answered.
    def attempts_recorded() -> bool:
        families = _samples(plain.get("/metrics").text)
        return (_value(families, "chronik_webhook_delivery_attempts_total", outcome="succeeded")
                or 0) >= 3  # fmt: skip

    wait_until(attempts_recorded, timeout=30, what="attempts to be recorded")

    api_families = _samples(plain.get("/metrics").text)
    assert api_families.keys() >= SHARED | API_ONLY, sorted(
        (SHARED | API_ONLY) - api_families.keys()
    )
    assert _value(api_families, "chronik_database_up") == 1
    assert (
        _delta(before, api_families, "chronik_commands_total", command="CreateEntry", code="ok")
        == 3
    )
    assert (
        _delta(
            before, api_families, "chronik_commands_total", command="EditEntry", code="NOT_FOUND"
        )
        == 1
    )
    assert _value(api_families, "chronik_db_pool_max_connections", pool="reads")
    assert _value(api_families, "chronik_db_pool_max_connections", pool="events")

    # Routes are templates: bounded cardinality, no ids in labels.
    routes = {s.labels["route"] for s in api_families["chronik_http_requests"]}
    assert "/v1/teams/{team_id}/entries" in routes
    assert "/v1/teams/{team_id}/entries/{entry_id}" in routes
    assert not [r for r in routes if team["id"] in r]
    created = {"method": "POST", "route": "/v1/teams/{team_id}/entries", "status": "201"}
    assert _delta(before, api_families, "chronik_http_requests_total", **created) == 3

    worker_families = _scrape(worker_process)
    assert worker_families.keys() >= SHARED, sorted(SHARED - worker_families.keys())
    assert _value(worker_families, "chronik_database_up") == 1
    assert _value(worker_families, "chronik_db_pool_max_connections", pool="events")
    # The same cluster-wide truth as the API's.
    assert (
        _value(worker_families, "chronik_webhook_delivery_attempts_total", outcome="succeeded") or 0
    ) >= 3


def test_a_taken_port_leaves_the_worker_without_metrics_not_down(settings: Settings) -> None:
    store = open_event_store(PostgresTarget.from_url(settings.database_url_value()), pool_size=1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = WorkerMetricsServer(settings.model_copy(update={"worker_metrics_port": port}), store)
        busy.start()  # logs an error instead of raising
        assert busy.port is None
        busy.stop()
    off = WorkerMetricsServer(settings.model_copy(update={"worker_metrics_port": 0}), store)
    off.start()
    assert off.port is None
    off.stop()
    free = WorkerMetricsServer(settings.model_copy(update={"worker_metrics_port": port}), store)
    free.start()
    try:
        assert free.port == port
        assert "chronik_database_up 1.0" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        free.stop()
        store.close()
