"""What operators see of projections: /readyz, /metrics and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

from infra.devstack.processes import wait_until
from infra.settings import Settings
from tests.e2e.conftest import Api


def test_readyz_and_metrics_report_each_projection(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    owner.post(f"/v1/teams/{team['id']}/entries", json={"title": "one"})
    owner.get(f"/v1/teams/{team['id']}/entries")  # waits until the entry is visible

    ready = api.client().get("/readyz").json()
    entries = ready["projections"]["entries"]
    assert entries["state"] == "active"
    assert entries["stalled"] is None
    assert entries["position"] >= api.last_position[0]

    text = api.client().get("/metrics").text
    for name in (
        "chronik_head_position",
        'chronik_projection_position{generation="',
        'chronik_projection_lag{generation="',
        'chronik_projection_stalled{generation="',
        "chronik_projection_applied_events_total",
        "chronik_notifications_created_total",
        "chronik_emails_sent_total",
        "chronik_emails_failed_total",
        "chronik_email_attempts_failed_total",
        "chronik_emails_pending",
        "chronik_event_store_append_batch_commands_count",
        'chronik_event_store_append_seconds_bucket{le="',
        "process_resident_memory_bytes",
    ):
        assert name in text, name
    assert 'projection="entries",state="active"} 0.0' in text  # not stalled


def test_cli_status_lists_every_projection(api: Api, api_settings: Settings) -> None:
    api.create_team()
    env = {**os.environ, "CHRONIK_DATABASE_URL": api_settings.database_url_value()}

    def status() -> str:
        return subprocess.run(
            [sys.executable, "-m", "infra.cli", "projections", "status"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip

    wait_until(lambda: " 0\n" in status() + "\n", timeout=30, what="a projection with no lag")
    lines = status().splitlines()
    assert lines[0].split()[:3] == ["projection", "gen", "ver"]
    assert any(line.startswith("entries") and " active " in line for line in lines)
    unknown = subprocess.run(
        [sys.executable, "-m", "infra.cli", "projections", "retry", "nope"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("chronik: no projection named 'nope'")
