"""`make soak` keeps working: the soak runner, for 15 s at a low rate, against
this run's servers. It checks that the runner passes and that every kind of
load it promises actually happened (not the memory figures: 15 s is warm-up)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.settings import Settings


@pytest.mark.timeout(300)
def test_a_short_soak_passes_and_exercises_every_kind_of_load(
    base_settings: Settings, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "CHRONIK_DATABASE_URL": base_settings.database_url_value(),
        "CHRONIK_NATS_URL": base_settings.nats_url or "",
    }
    run = subprocess.run(
        [
            sys.executable, "-m", "bench.soak", "--duration", "15", "--rate", "10",
            "--streams", "2", "--sample-every", "2", "--max-growth-mb", "1000",
            "--results", str(tmp_path),
        ],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "| process |" in run.stdout
    (out,) = tmp_path.glob("soak-*.json")
    result = json.loads(out.read_text())
    assert result["ok"] is True
    assert result["problems"] == []
    statuses = result["statuses"]
    for kind in ("create", "edit", "delete", "read_list", "read_one", "sync", "sse_open"):
        assert any(s.startswith("2") for s in statuses[kind]), (kind, statuses)
    assert result["webhook_received"] == result["webhook_deliveries"] > 0
    assert all(n > 0 for n in result["sse_changes_events"])
    assert len(result["samples"]["at_s"]) >= 5
    assert {"api supervisor", "worker", "api worker 1", "api worker 2"} <= set(result["memory"])
