"""compose.yaml and the Dockerfile describe the deployment the docs promise.

The shape is checked by reading the files (PyYAML, no Docker needed). Where
``docker`` is on PATH and ``docker compose version`` works, Compose itself must
also accept the file (``docker compose config -q``); on a machine without
Compose that one check is simply not run: the rest of each test still is.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; uvicorn[standard] brings it

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else list(command)


def _depends(service: dict[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on", {})
    if isinstance(depends, list):  # the short form waits for nothing but the start
        return dict.fromkeys(depends, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in depends.items()}


def _compose_works() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def test_postgres_18_with_a_volume_and_a_healthcheck() -> None:
    postgres = _services()["postgres"]
    assert postgres["image"].split(":")[1].split("-")[0] == "18"
    assert any(str(v).startswith("pgdata:") for v in postgres["volumes"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_nats_runs_jetstream_on_a_persistent_volume_with_a_healthcheck() -> None:
    nats = _services()["nats"]
    command = _command(nats)
    assert "-js" in command
    store = command[command.index("-sd") + 1]
    volumes = {str(v).split(":")[0]: str(v).split(":")[1] for v in nats["volumes"]}
    assert volumes.get("natsdata") == store, "the JetStream store must be on the named volume"
    assert "natsdata" in _compose()["volumes"]
    assert "pgdata" in _compose()["volumes"]
    assert "healthcheck" in nats
    # The healthcheck runs a program inside the container: the image must have it.
    if "wget" in " ".join(nats["healthcheck"]["test"]):
        assert "alpine" in nats["image"], "the scratch-based nats image has no wget"


def test_migrations_run_once_before_the_api_and_the_worker() -> None:
    services = _services()
    migrate = services["migrate"]
    assert _command(migrate) == ["chronik", "migrate"]
    assert migrate.get("restart", "no") == "no"
    assert _depends(migrate)["postgres"] == "service_healthy"
    for name in ("api", "worker"):
        depends = _depends(services[name])
        assert depends.get("migrate") == "service_completed_successfully", name
        assert depends.get("nats") == "service_healthy", name


def test_api_has_two_replicas_and_the_worker_stands_by() -> None:
    services = _services()
    api, worker = services["api"], services["worker"]
    assert _command(api) == ["chronik", "api"]
    assert _command(worker) == ["chronik", "worker"]
    assert api["deploy"]["replicas"] == 2
    assert worker["deploy"]["replicas"] >= 2, "a standby worker takes over a dead one"
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert "healthcheck" in worker


def test_every_chronik_service_runs_the_one_image_built_here() -> None:
    services = _services()
    chronik = {n: s for n, s in services.items() if _command(s)[:1] == ["chronik"]}
    assert set(chronik) == {"migrate", "api", "worker"}
    assert {s["image"] for s in chronik.values()} == {"chronik:latest"}
    assert all(s.get("build") == "." for s in chronik.values())
    environment = chronik["api"]["environment"]
    assert environment["CHRONIK_DATABASE_URL"].endswith("@postgres:5432/chronik")
    assert environment["CHRONIK_NATS_URL"] == "nats://nats:4222"
    assert environment["CHRONIK_HTTP_HOST"] == "0.0.0.0"  # inside a container


def _dockerfile_lines() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_the_dockerfile_installs_the_packages_pyproject_lists_with_the_constraints() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    included = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied: set[str] = set()
    for line in _dockerfile_lines():
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            copied |= {s.rstrip("/") for s in sources if not s.startswith("--")}
    packages = {c for c in copied if (ROOT / c).is_dir()}
    assert packages == included, "the image must hold exactly the packages the wheel has"
    assert {"pyproject.toml", "constraints.txt", "README.md"} <= copied
    runs = " ".join(line for line in _dockerfile_lines() if line.startswith("RUN "))
    assert re.search(r"pip install .*-c constraints\.txt \.(\s|$)", runs)
    assert any(line.startswith("USER ") and "root" not in line for line in _dockerfile_lines())


def test_the_image_leaves_the_checkouts_caches_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".chronik", ".git"} <= set(ignored)


def test_docker_compose_accepts_the_file_where_compose_is_installed() -> None:
    """Run only where ``docker compose`` works; the rest of this module needs no Docker."""
    if not _compose_works():
        return
    done = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        # The file requires an operator token; a placeholder is enough to render it.
        env=os.environ | {"CHRONIK_OPERATOR_TOKEN": "compose-config-check"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
