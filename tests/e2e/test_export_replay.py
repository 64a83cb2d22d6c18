"""``chronik export`` and ``chronik replay`` against a real database: the export
is the public event form read from the event store, a replay rebuilds every
replayable projection to the same rows while reads keep answering."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from infra import operations
from infra.db import PostgresTarget
from infra.event_store import head_position, open_event_store
from infra.export import ExportRange, public_documents
from infra.settings import Settings
from projections import folding
from projections.base import Projection
from projections.catalog import all_projections
from projections.quotas import QuotasProjection
from projections.teams import TeamsProjection
from tests.e2e.conftest import Api
from tests.projection_support import connect, live_generation, wait_caught_up

CHRONIK = str(Path(sys.executable).parent / "chronik")
NDJSON = {"Accept": "application/x-ndjson"}


def _chronik(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"CHRONIK_DATABASE_URL": database_url}
    return subprocess.run(
        [CHRONIK, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _exported(database_url: str, *args: str) -> list[dict[str, Any]]:
    result = _chronik(database_url, "export", *args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def _feed_export(api: Api, key: str, team_id: str) -> list[dict[str, Any]]:
    """The team's /events NDJSON export as its owner reads it (after the feed
    has caught up with every write of the session)."""
    with (
        api.client(key) as client,
        client.stream("GET", f"/v1/teams/{team_id}/events", headers=NDJSON) as response,
    ):
        assert response.status_code == 200
        return [orjson.loads(line) for line in response.iter_lines() if line]


def _write_history(api: Api, team: dict[str, Any], *, private: bool = False) -> None:
    """Entries edited, deleted, restored; a member, a key, a prompt, a webhook:
    most public types and every read table gets rows."""
    owner = api.client(team["owner_key"])
    base = f"/v1/teams/{team['id']}"
    ids = []
    for n in range(4):
        created = owner.post(f"{base}/entries", json={"title": f"entry {n}", "tags": ["t"]})
        assert created.status_code == 201, created.text
        ids.append(created.json()["data"]["id"])
    assert owner.patch(f"{base}/entries/{ids[0]}", json={"body": "edited"}).status_code == 200
    assert owner.delete(f"{base}/entries/{ids[1]}").status_code in (200, 204)
    assert owner.post(f"{base}/entries/{ids[1]}/restore").status_code == 200
    added = owner.post(
        f"{base}/members", json={"email": "m@example.com", "display_name": "M", "role": "member"}
    )
    assert added.status_code == 201, added.text
    user_id = added.json()["data"]["user_id"]
    issued = owner.post(f"{base}/api-keys", json={"user_id": user_id, "name": "m"})
    assert issued.status_code == 201, issued.text
    assert owner.post(f"{base}/prompts", json={"text": "How was it?"}).status_code == 201
    hook = owner.post(f"{base}/webhooks", json={"url": "https://hooks.example.com/in"})
    assert hook.status_code == 201, hook.text
    if private:
        member = api.client(issued.json()["data"]["key"])
        diary = member.post(f"{base}/entries", json={"title": "diary", "visibility": "private"})
        assert diary.status_code == 201, diary.text


# -- export --------------------------------------------------------------------------


def test_an_export_of_a_team_is_its_event_feed(api: Api, api_settings: Settings) -> None:
    url = api_settings.database_url_value()
    ours = api.create_team(name="Ours")
    theirs = api.create_team(name="Theirs")
    _write_history(api, ours)
    _write_history(api, theirs, private=True)

    exported = _exported(url, "--team", ours["id"])
    # Only team-visible entries in this team: the owner sees every event.
    assert exported == _feed_export(api, ours["owner_key"], ours["id"])
    assert {e["team_id"] for e in exported} == {ours["id"]}
    assert {"entry.created", "entry.edited", "entry.deleted", "entry.restored"} <= {
        e["type"] for e in exported
    }

    # The operator's export has the member's private entry the owner's feed has not.
    their_export = _exported(url, "--team", theirs["id"])
    their_feed = _feed_export(api, theirs["owner_key"], theirs["id"])
    assert {e["team_id"] for e in their_export} == {theirs["id"]}
    diary = [
        e for e in their_export if e["type"] == "entry.created" and e["data"]["title"] == "diary"
    ]
    assert len(diary) == 1
    assert diary[0]["data"]["visibility"] == "private"
    assert diary[0] not in their_feed
    assert [e for e in their_export if e != diary[0]] == their_feed

    # Everything, unfiltered: both teams, in position order, nothing else.
    everything = _exported(url)
    positions = [e["position"] for e in everything]
    assert positions == sorted(set(positions))
    assert everything == sorted(exported + their_export, key=lambda e: e["position"])


def test_after_starts_after_that_position(api: Api, api_settings: Settings) -> None:
    url = api_settings.database_url_value()
    team = api.create_team()
    _write_history(api, team)
    everything = _exported(url)
    middle = everything[len(everything) // 2]["position"]

    assert _exported(url, "--after", str(middle)) == [
        e for e in everything if e["position"] > middle
    ]
    assert _exported(url, "--after", str(everything[-1]["position"])) == []
    assert _exported(url, "--after", "0") == everything


def test_an_export_written_to_a_file_reports_what_it_did(
    api: Api, api_settings: Settings, tmp_path: Path
) -> None:
    url = api_settings.database_url_value()
    team = api.create_team()
    _write_history(api, team)
    out = tmp_path / "events.ndjson"

    result = _chronik(url, "export", "--team", team["id"], "--output", str(out))

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # the documents went to the file, not stdout
    lines = out.read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == _feed_export(
        api, team["owner_key"], team["id"]
    )
    assert f"exported {len(lines)} event(s)" in result.stderr
    assert "exporting" in result.stderr  # the progress bar


def test_pages_join_up_without_gaps_or_repeats(api: Api, api_settings: Settings) -> None:
    """The CLI's pages hold 1000 events; small pages show the keyset stitching."""
    url = api_settings.database_url_value()
    team = api.create_team()
    _write_history(api, team)
    store = open_event_store(PostgresTarget.from_url(url), pool_size=1)
    try:
        with connect(url) as conn:
            span = ExportRange(0, head_position(conn), 0)
        whole = [d for _, docs in public_documents(store, span, page_size=1000) for d in docs]
        pages = list(public_documents(store, span, page_size=3))
    finally:
        store.close()
    assert len(pages) > 3
    assert all(read <= 3 for read, _ in pages)
    assert [d for _, docs in pages for d in docs] == whole


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("--team", "not-a-team"), 2, "argument --team: invalid UUID value"),
        (("--after", "-1"), 2, "argument --after: must be a position"),
        (("--after", "ten"), 2, "argument --after: must be a position"),
        (("--team", str(uuid.UUID(int=7))), 1, f"chronik: no team {uuid.UUID(int=7)}"),
    ],
)
def test_a_bad_request_says_why_without_a_traceback(
    database_url: str, tmp_path: Path, args: tuple[str, ...], code: int, says: str
) -> None:
    out = tmp_path / "events.ndjson"
    result = _chronik(database_url, "export", *args, "--output", str(out))
    assert result.returncode == code
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()  # nothing that could pass for an (empty) export


def test_an_unwritable_output_says_so(database_url: str, tmp_path: Path) -> None:
    out = tmp_path / "missing" / "events.ndjson"
    result = _chronik(database_url, "export", "--output", str(out))
    assert result.returncode == 1
    assert result.stderr.startswith(f"chronik: cannot write {out}")
    assert "Traceback" not in result.stderr


# -- replay --------------------------------------------------------------------------


def _read_tables(url: str, projections: list[Projection]) -> dict[str, list[str]]:
    """Every row readers see, per table, in a stable order."""
    found = {}
    with connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        for projection in projections:
            for table in projection.tables:
                rows = cur.execute(
                    sql.SQL("SELECT * FROM {}").format(sql.Identifier("reads", table))
                ).fetchall()
                found[table] = sorted(repr(row) for row in rows)
    return found


@contextmanager
def _reading(api: Api, team: dict[str, Any]) -> Iterator[Counter[int]]:
    """A client reading the team's entries, events, team and prompts in a loop
    (no read-your-writes wait) from the first answer until the block ends;
    the status codes it got."""
    seen: Counter[int] = Counter()
    stop, answered = threading.Event(), threading.Event()
    base = f"/v1/teams/{team['id']}"

    def read() -> None:
        with api.client(team["owner_key"], session=False) as client:
            while not stop.is_set():
                for path in ("/entries", "/events", "", "/prompts"):
                    seen[client.get(base + path).status_code] += 1
                answered.set()

    thread = threading.Thread(target=read)
    thread.start()
    try:
        assert answered.wait(30), "the reader never got an answer"
        yield seen
    finally:
        stop.set()
        thread.join()


def test_replay_rebuilds_every_replayable_projection_to_the_same_rows(
    api: Api, api_settings: Settings
) -> None:
    url = api_settings.database_url_value()
    team = api.create_team()
    _write_history(api, team, private=True)
    projections = all_projections()
    before = {p.name: wait_caught_up(url, p.name) for p in projections}
    tables = _read_tables(url, projections)
    assert tables["entries"]
    assert tables["public_events"]

    with _reading(api, team) as seen:
        result = _chronik(url, "replay", "--batch-size", "7")

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    for projection in projections:
        after = live_generation(url, projection.name)
        assert after is not None
        if getattr(projection, "replayable", True):
            assert after.id != before[projection.name].id, projection.name
            assert after.position >= before[projection.name].position
            assert any(line.startswith(f"{projection.name}: generation") for line in lines)
        else:
            assert after.id == before[projection.name].id, projection.name
            skipped = f"{projection.name}: skipped, not replayable (replay never rebuilds it)"
            assert skipped in lines
    assert _read_tables(url, projections) == tables
    assert set(seen) == {200}, seen  # reads answered while generations were switched
    with api.client(team["owner_key"]) as owner:
        listed = owner.get(f"/v1/teams/{team['id']}/entries")
    assert listed.status_code == 200
    assert len(listed.json()["data"]) == 4  # the owner's four; the member's diary is private


def test_a_rebuild_writing_every_table_by_binary_copy_gives_the_same_rows(
    api: Api, api_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live batches of a few events are written row by row; a rebuild's large
    ones by binary COPY, which needs every value to match its column's type
    exactly. Forcing COPY for every write checks each table's values."""
    url = api_settings.database_url_value()
    team = api.create_team()
    _write_history(api, team, private=True)
    with api.client(team["owner_key"]) as owner:
        preference = f"/v1/teams/{team['id']}/notification-preferences/entry_shared"
        assert owner.patch(preference, json={"email": False}).status_code == 200
    projections = [p for p in all_projections() if p.replayable]
    for projection in projections:
        wait_caught_up(url, projection.name)
    tables = _read_tables(url, projections)
    assert all(tables.values()), [name for name, rows in tables.items() if not rows]

    monkeypatch.setattr(folding, "_COPY_FROM_ROWS", 1)
    for projection in projections:
        said = operations.rebuild(api_settings, projection.name, batch_size=10_000)
        assert "now serves reads" in said

    assert _read_tables(url, projections) == tables


def test_replay_skips_a_projection_that_is_not_replayable(
    api_settings: Settings, worker: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = api_settings.database_url_value()

    class Ledgerish(QuotasProjection):
        replayable = False

    monkeypatch.setattr(operations, "all_projections", lambda: [TeamsProjection(), Ledgerish()])
    teams_before = wait_caught_up(url, "teams")
    quotas_before = wait_caught_up(url, "quotas")
    said: list[str] = []

    operations.replay(api_settings, say=said.append)

    assert said[1] == "quotas: skipped, not replayable (replay never rebuilds it)"
    assert said[0].startswith("teams: generation")
    teams_after, quotas_after = live_generation(url, "teams"), live_generation(url, "quotas")
    assert teams_after is not None
    assert teams_after.id != teams_before.id
    assert quotas_after is not None
    assert quotas_after.id == quotas_before.id


def test_replay_of_an_unreachable_database_is_one_line() -> None:
    result = _chronik("postgresql://app:hunter2@127.0.0.1:1/x", "replay")
    assert result.returncode == 1
    assert result.stderr.startswith("chronik: cannot reach PostgreSQL")
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr
