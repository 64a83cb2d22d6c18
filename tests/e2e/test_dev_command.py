"""``chronik dev`` as a developer runs it: embedded servers from the wheels,
ready quickly, and nothing left behind however it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.devstack.processes import free_port, wait_until

CHRONIK = str(Path(sys.executable).parent / "chronik")


def _env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHRONIK_")}
    env |= {"CHRONIK_DATA_DIR": str(data_dir), "CHRONIK_HTTP_PORT": str(port)}
    return env


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(int(proc.name))
    return found


def _ready(port: int) -> bool:
    try:
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
    except httpx.HTTPError:
        return False
    return health.status_code == 200 and ready.status_code == 200


@pytest.fixture
def data_dir() -> Path:
    # Not created: `chronik dev` creates it, as on a fresh clone.
    return Path(tempfile.gettempdir()) / f"chronik-e2e-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def dev(data_dir: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    process = subprocess.Popen(
        [CHRONIK, "dev"], env=_env(data_dir, port), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    yield process, port
    if process.poll() is None:
        process.kill()
        process.wait(10)
    assert process.stdout is not None
    process.stdout.close()
    subprocess.run(["rm", "-rf", str(data_dir)], check=False)


def test_ready_within_30_s_and_ctrl_c_leaves_nothing_behind(
    dev: tuple[subprocess.Popen[str], int], data_dir: Path
) -> None:
    process, port = dev
    wait_until(lambda: _ready(port), timeout=30, what="healthz and readyz answering 200")
    assert _processes_mentioning(str(data_dir)), "the embedded servers should be running"

    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    assert process.stdout is not None
    output = process.stdout.read()
    assert f"Chronik is running at http://127.0.0.1:{port}" in output
    owner_keys = [line for line in output.splitlines() if line.startswith("owner key: chk_")]
    assert len(owner_keys) == 1
    assert "Traceback" not in output
    wait_until(
        lambda: not _processes_mentioning(str(data_dir)), timeout=10, what="every process stopping"
    )


def test_a_second_dev_on_the_same_data_refuses_clearly(
    dev: tuple[subprocess.Popen[str], int], data_dir: Path
) -> None:
    _, port = dev
    wait_until(lambda: _ready(port), timeout=30, what="healthz and readyz answering 200")
    second = subprocess.run(
        [CHRONIK, "dev"], env=_env(data_dir, free_port()), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert second.returncode == 1
    assert "is in use by pid" in second.stderr
    assert "Traceback" not in second.stderr
    assert _ready(port), "the first stack must be unharmed"


def test_a_crashed_parent_takes_its_servers_with_it(
    dev: tuple[subprocess.Popen[str], int], data_dir: Path
) -> None:
    process, port = dev
    wait_until(lambda: _ready(port), timeout=30, what="healthz and readyz answering 200")
    process.kill()  # SIGKILL: no handler of ours runs
    process.wait(10)
    wait_until(
        lambda: not _processes_mentioning(str(data_dir)), timeout=15, what="every process stopping"
    )
