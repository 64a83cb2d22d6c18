"""examples/sync_client.py against a real API and worker: its SQLite copy
converges with the server after a pull, while following the live stream, and
after pushing offline edits (one of them conflicting)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from examples.sync_client import SyncClient
from infra.devstack.processes import wait_until
from tests.e2e.conftest import Api

ROOT = Path(__file__).resolve().parents[2]
Items = dict[tuple[str, str], dict[str, Any]]


def _fresh_view(api: Api, key: str, team: str, db: Path) -> Items:
    """What a client that syncs from nothing gets now: the convergence target."""
    with SyncClient(api.base_url, key, team, db) as fresh:
        fresh.pull(min_position=api.last_position[0])
        return fresh.items()


def _entry(api: Api, key: str, team: str, title: str) -> dict[str, Any]:
    with api.client(key) as c:
        answer = c.post(f"/v1/teams/{team}/entries", json={"title": title, "body": "b"})
    assert answer.status_code == 201, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def _patch(api: Api, key: str, team: str, entry_id: str, **fields: Any) -> None:
    with api.client(key) as c:
        answer = c.patch(f"/v1/teams/{team}/entries/{entry_id}", json=fields)
    assert answer.status_code == 200, answer.text


def test_pull_stream_and_push_converge(api: Api, tmp_path: Path) -> None:
    team = api.create_team()
    key, team_id = team["owner_key"], team["id"]
    first = _entry(api, key, team_id, "one")
    second = _entry(api, key, team_id, "two")
    third = _entry(api, key, team_id, "three")
    _patch(api, key, team_id, first["id"], title="one, edited")
    with api.client(key) as c:
        assert c.delete(f"/v1/teams/{team_id}/entries/{second['id']}").status_code == 200

    # Pull: from nothing, the same as a fresh full sync.
    client = SyncClient(api.base_url, key, team_id, tmp_path / "local.sqlite")
    assert client.pull(min_position=api.last_position[0]) > 0
    pulled = client.items()
    assert pulled == _fresh_view(api, key, team_id, tmp_path / "fresh1.sqlite")
    assert pulled[("entry", first["id"])]["title"] == "one, edited"
    assert ("entry", second["id"]) not in pulled
    assert ("member", team["owner_user_id"]) in pulled

    # Stream: changes made while it follows arrive and converge.
    stop = threading.Event()
    follower = threading.Thread(target=client.stream, args=(stop.is_set,), kwargs={"seconds": 90})
    follower.start()
    fourth = _entry(api, key, team_id, "four, live")
    _patch(api, key, team_id, third["id"], title="three, live")
    with api.client(key) as c:
        restored = c.post(f"/v1/teams/{team_id}/entries/{second['id']}/restore")
    assert restored.status_code == 200, restored.text
    target = _fresh_view(api, key, team_id, tmp_path / "fresh2.sqlite")
    # Looked at through a connection of its own: it sees only committed pages.
    with SyncClient(api.base_url, key, team_id, tmp_path / "local.sqlite") as watcher:
        wait_until(lambda: watcher.items() == target, timeout=30, what="the stream converging")
    stop.set()
    _entry(api, key, team_id, "five")  # an event, so the stream looks at `stop` now
    follower.join(30)
    assert not follower.is_alive()
    streamed = client.items()
    assert streamed[("entry", fourth["id"])]["title"] == "four, live"
    assert streamed[("entry", second["id"])]["title"] == "two"

    # Push: offline edits, one of them made on a version that moved on meanwhile.
    _patch(api, key, team_id, third["id"], title="three, elsewhere")
    offline_id = client.create_entry("written offline", "on a train", ["offline"])
    client.edit_entry(first["id"], body="edited offline")
    client.edit_entry(third["id"], title="three, offline")  # stale: conflicts
    assert len(client.queued()) == 3
    outcome = client.push()
    assert outcome.applied == 2
    assert [f["error"]["code"] for f in outcome.failed] == ["VERSION_CONFLICT"]
    assert outcome.kept == 0
    assert client.queued() == []
    api.last_position[0] = max(api.last_position[0], outcome.position or 0)
    pushed = client.items()
    assert pushed == _fresh_view(api, key, team_id, tmp_path / "fresh3.sqlite")
    assert pushed[("entry", offline_id)]["title"] == "written offline"
    assert pushed[("entry", first["id"])]["body"] == "edited offline"
    assert pushed[("entry", third["id"])]["title"] == "three, elsewhere"
    with api.client(key) as c:
        on_server = c.get(f"/v1/teams/{team_id}/entries/{offline_id}")
    assert on_server.status_code == 200
    assert on_server.json()["data"]["tags"] == ["offline"]
    client.close()


def test_the_command_line_pulls_into_its_file(api: Api, tmp_path: Path) -> None:
    team = api.create_team()
    key, team_id = team["owner_key"], team["id"]
    entry = _entry(api, key, team_id, "from the CLI")
    db = tmp_path / "cli.sqlite"
    common = [sys.executable, str(ROOT / "examples" / "sync_client.py"), "--url", api.base_url,
              "--key", key, "--team", team_id, "--db", str(db)]  # fmt: skip

    def run(*args: str) -> dict[str, Any]:
        done = subprocess.run([*common, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    # The entry was written before: pull until the sync feed has it.
    with SyncClient(api.base_url, key, team_id, tmp_path / "wait.sqlite") as waiter:
        waiter.pull(min_position=api.last_position[0])
    pulled = run("pull")
    assert pulled["applied"] >= 2  # the owner (member) and the entry
    assert pulled["cursor"]
    queued = run("add-entry", "--title", "queued by the CLI")
    shown = run("show")
    assert {(i["entity"], i["id"]) for i in shown["items"]} >= {("entry", entry["id"])}
    assert [m["args"]["id"] for m in shown["queue"]] == [queued["queued"]]
    pushed = run("push")
    assert pushed["applied"] == 1
    shown = run("show")
    assert shown["queue"] == []
    titles = {i["data"]["title"] for i in shown["items"] if i["entity"] == "entry"}
    assert titles == {"from the CLI", "queued by the CLI"}
