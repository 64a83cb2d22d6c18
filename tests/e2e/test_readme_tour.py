"""The README's five-minute tour, run verbatim.

The test reads the tour's ``sh`` blocks from README.md. The first starts the
stack (``... make run``); the test starts what ``make run`` runs, ``chronik
dev``, with the variables that line sets, this test's database and NATS
namespace, a data folder and a port of its own. The other blocks run as one
bash script, in the checkout, as a reader would paste them into a second
terminal; each step's output is checked for what the tour says it shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.devstack.processes import free_port, wait_until
from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHRONIK = str(Path(sys.executable).parent / "chronik")
STEP = "@@tour-step {}@@"
RECEIVER_PORT = 8088  # the port the tour's receiver listens on


def tour_blocks(readme: str) -> list[str]:
    """The ``sh`` blocks of the "A five-minute tour" section, in order."""
    start = readme.index("## A five-minute tour")
    end = readme.find("\n## ", start + 1)
    section = readme[start : end if end > 0 else None]
    return re.findall(r"^```sh\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)


def start_line_env(block: str) -> dict[str, str]:
    """The variables the tour's first block sets for ``make run``."""
    words = shlex.split(block, comments=True)
    assert words[-2:] == ["make", "run"], f"the tour must start with make run, not {block!r}"
    pairs = [word.partition("=") for word in words[:-2]]
    assert all(sep for _, sep, _ in pairs), f"only VAR=value may precede make run: {block!r}"
    return {name: value for name, _, value in pairs}


def test_make_run_is_chronik_dev() -> None:
    """What this test starts is what ``make run`` runs."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^run:.*\n\t(.*)$", makefile, flags=re.MULTILINE)
    assert recipe is not None
    assert recipe.group(1).strip() == "$(BIN)/chronik dev $(ARGS)"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "chronik-data"


@pytest.fixture
def dev(settings: Settings, data_dir: Path) -> Iterator[tuple[str, list[str]]]:
    """``chronik dev`` as the tour starts it; yields its URL and its output lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHRONIK_")}
    port = free_port()
    env |= start_line_env(tour_blocks((ROOT / "README.md").read_text())[0])
    env |= {
        "CHRONIK_DATABASE_URL": settings.database_url_value(),
        "CHRONIK_NATS_URL": settings.nats_url or "",
        "CHRONIK_NATS_NAMESPACE": settings.nats_namespace,
        "CHRONIK_DATA_DIR": str(data_dir),
        "CHRONIK_HTTP_PORT": str(port),
        "CHRONIK_PROJECTION_POLL_INTERVAL": "0.5",
        # The test machine is shared and often busy: let `min_position` reads
        # wait longer than the default 5 s before answering 503 STALE_READ.
        "CHRONIK_READ_WAIT_TIMEOUT": "30",
        # Fewer connections per pool: the PostgreSQL may be shared by other suites.
        "CHRONIK_DB_POOL_SIZE": "4",
    }
    process = subprocess.Popen(
        [CHRONIK, "dev"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    assert process.stdout is not None
    stdout = process.stdout

    def drain() -> None:  # a full pipe would stall the server
        for line in stdout:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        wait_until(
            lambda: (
                any(line.startswith("for another shell:") for line in lines)
                or process.poll() is not None
            ),
            timeout=60,
            what="chronik dev printing its URLs",
        )
        assert process.poll() is None, "chronik dev exited:\n" + "\n".join(lines)
        base = f"http://127.0.0.1:{port}"
        # A reader starts the tour once the API answers, as the README says.
        wait_until(lambda: _answers(f"{base}/readyz"), timeout=60, what="the API getting ready")
        yield base, lines
    finally:
        process.terminate()
        process.wait(30)
        reader.join(5)
        stdout.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _run_tour(blocks: list[str], data_dir: Path) -> dict[int, str]:
    script = "set -euo pipefail\n" + "".join(
        # A leading newline: curl's answers do not end with one.
        f"printf '\\n{STEP.format(i)}\\n'\n{block}"
        for i, block in enumerate(blocks, start=1)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHRONIK_")}
    env["CHRONIK_DATA_DIR"] = str(data_dir)
    # A session of its own, so a receiver a failed tour left in the background
    # goes with it (and does not hold its port for the next run).
    tour = subprocess.Popen(
        ["bash", "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = tour.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(tour.pid, signal.SIGTERM)
        tour.wait(10)
    assert tour.returncode == 0, f"the tour failed:\n{stdout}\n{stderr}"
    parts = re.split(r"^@@tour-step (\d+)@@$", stdout, flags=re.MULTILINE)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


def _json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.startswith(("{", "[", '"'))]


def _errors(lines: list[str]) -> list[str]:
    """What ``chronik dev`` logged about errors and warnings."""
    return [line for line in lines if '"level":"error"' in line or '"level":"warning"' in line]


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As the receiver binds: a closed connection's TIME_WAIT does not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_readme_tour_runs_verbatim(dev: tuple[str, list[str]], data_dir: Path) -> None:
    assert shutil.which("curl"), "the tour needs curl on PATH"
    assert shutil.which("jq"), "the tour needs jq on PATH"
    assert _port_is_free(RECEIVER_PORT), f"the tour's receiver needs port {RECEIVER_PORT}"
    base, dev_output = dev
    assert any(line.startswith("operator token: chop_") for line in dev_output)
    assert (data_dir / "dev.env").stat().st_mode & 0o777 == 0o600

    blocks = tour_blocks((ROOT / "README.md").read_text())
    try:
        steps = _run_tour(blocks[1:], data_dir)
    except AssertionError as exc:
        raise AssertionError("\n".join([str(exc), *_errors(dev_output)])) from None
    assert sorted(steps) == list(range(1, len(blocks)))

    # 1: the second shell finds the stack and it is ready.
    ready = _json_lines(steps[1])[0]
    assert ready["status"] == "ready"

    # 2: a new team, and its owner's key works.
    me = _json_lines(steps[2])[0]
    assert me["role"] == "owner"

    # 3: an entry, at a position.
    created = _json_lines(steps[3])[0]
    entry_id, position = created["data"]["id"], created["position"]
    assert created["data"]["version"] == 1
    assert position > 0

    # 4: read back, alone and listed.
    assert re.search(r"(?im)^HTTP/[\d.]+ 200\b", steps[4]), steps[4]
    assert re.search(r'(?im)^etag: "1"\s*$', steps[4]), steps[4]
    entry, listed = _json_lines(steps[4])
    assert entry["id"] == entry_id
    assert entry["title"] == "Day one"
    assert listed == {"titles": ["Day one"], "next_cursor": None}

    # 5: a full sync has the entry; a pull from its cursor has nothing new.
    *changes, since = _json_lines(steps[5])
    assert {"entity": "entry", "op": "upsert", "id": entry_id} in changes
    assert since["changes"] == []
    assert since["has_more"] is False

    # 6: the edit arrives at the receiver, signature verified.
    edited, received, *deliveries = _json_lines(steps[6])
    assert edited["version"] == 2
    assert received["type"] == "entry.edited"
    assert received["data"]["title"] == "Day one, edited"
    assert received["position"] == edited["position"]
    assert len(deliveries) == 1
    # The receiver answers before it prints, so the worker may not have
    # recorded the answer yet when the tour lists the deliveries.
    assert deliveries[0]["status"] in ("succeeded", "pending")

    # 7: history, state at version 1, the chain verifies, errors are enveloped.
    *history, state, verify, error = _json_lines(steps[7])
    assert [(h["aggregate_version"], h["type"]) for h in history][:2] == [
        (1, "entry.created"),
        (2, "entry.edited"),
    ]
    assert state == "Day one"
    # On failure, say why: e.g. a shared PostgreSQL out of connections.
    assert verify.get("ok") is True, "\n".join([steps[7], *_errors(dev_output)])
    assert verify["checked"] >= 3
    assert verify["first_bad_position"] is None
    assert error["error"]["code"] == "NOT_FOUND"
    assert error["request_id"]
    assert base.startswith("http://127.0.0.1:")
