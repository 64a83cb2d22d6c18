"""An offline-first sync client: a local SQLite copy of what a key may see of a
team, kept in sync with Chronik's pull, live stream and push (docs/sync.md).

httpx and the standard library only; nothing of Chronik is imported.

    python examples/sync_client.py --url URL --key chk_... --team TEAM_ID --db team.sqlite pull
    ... stream --seconds 30      # follow /sync/stream, applying changes as they come
    ... add-entry --title T --body B [--tag X]   # queued offline (no network)
    ... edit-entry ID --title T  # queued offline, made on the local version
    ... push                     # send the queue, then pull
    ... show                     # the local copy and the queue, as JSON

What it does, and why:

- The cursor is stored in the same SQLite transaction as the changes it
  covers, so a crash never skips or repeats a change.
- ``upsert`` replaces the local row and ``delete`` removes it, in the order
  received; that is all convergence needs (the server compacts).
- 410 ``CURSOR_EXPIRED`` (``details.reset``): the local copy is dropped and a
  full sync follows. The queue of offline edits is kept.
- Offline edits go to a queue, not into the synced rows: the server decides
  (an edit may conflict), and the next pull brings its verdict. A UI would
  show the queue on top of the rows.
- Each queued mutation has an id of its own, so pushing the queue again after
  a lost answer applies nothing twice. Mutations that failed for good are
  dropped from the queue and reported; ones that failed for now (503, 429)
  stay for the next push.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = ["PushOutcome", "SyncClient", "main"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    entity  TEXT NOT NULL,
    id      TEXT NOT NULL,
    version INTEGER NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (entity, id)
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS queue (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    mutation_id  TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    args         TEXT NOT NULL,
    base_version INTEGER
);
"""
PUSH_BATCH = 100  # the server's limit per push
PAGE_LIMIT = 500
# Worth another push later; any other error will not change by retrying.
RETRYABLE = frozenset({"UNAVAILABLE", "RATE_LIMITED", "INTERNAL"})


class CursorExpired(Exception):
    pass


@dataclass
class PushOutcome:
    applied: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)  # dropped from the queue
    kept: int = 0  # still queued (retryable)
    position: int | None = None


class SyncClient:
    def __init__(
        self, url: str, key: str, team: str, db: str | Path, *, timeout: float = 30
    ) -> None:
        self.team = team
        self.http = httpx.Client(
            base_url=f"{url.rstrip('/')}/v1/teams/{team}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
        )
        # Transactions by hand; one thread at a time (e.g. a stream in a thread of its own).
        self.db = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.http.close()
        self.db.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- the local copy ---------------------------------------------------------

    @property
    def cursor(self) -> str | None:
        row = self.db.execute("SELECT value FROM state WHERE key = 'cursor'").fetchone()
        return None if row is None else str(row[0])

    def items(self) -> dict[tuple[str, str], dict[str, Any]]:
        rows = self.db.execute("SELECT entity, id, data FROM items ORDER BY entity, id")
        return {(entity, id_): json.loads(data) for entity, id_, data in rows}

    def queued(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT mutation_id, name, args, base_version FROM queue ORDER BY seq"
        )
        return [
            {"id": m, "name": n, "args": json.loads(a)}
            | ({"base_version": b} if b is not None else {})
            for m, n, a, b in rows
        ]

    def _apply(self, page: dict[str, Any]) -> int:
        """A page's changes and its cursor, in one transaction."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for change in page["changes"]:
                if change["op"] == "upsert":
                    self.db.execute(
                        "INSERT INTO items (entity, id, version, data) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (entity, id) DO UPDATE"
                        " SET version = excluded.version, data = excluded.data",
                        (
                            change["entity"],
                            change["id"],
                            change["version"],
                            json.dumps(change["data"]),
                        ),
                    )
                else:  # delete: deleted, or no longer ours to see
                    self.db.execute(
                        "DELETE FROM items WHERE entity = ? AND id = ?",
                        (change["entity"], change["id"]),
                    )
            self.db.execute(
                "INSERT OR REPLACE INTO state (key, value) VALUES ('cursor', ?)", (page["cursor"],)
            )
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return len(page["changes"])

    def _reset(self) -> None:
        """Drop the synced copy (not the queue): the next pull is a full sync."""
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("DELETE FROM items")
        self.db.execute("DELETE FROM state WHERE key = 'cursor'")
        self.db.execute("COMMIT")

    # -- pull -------------------------------------------------------------------

    def _page(self, min_position: int | None) -> dict[str, Any]:
        params: dict[str, str | int] = {"limit": PAGE_LIMIT}
        if self.cursor is not None:
            params["cursor"] = self.cursor
        if min_position is not None:
            params["min_position"] = min_position
        answer = self.http.get("/sync", params=params)
        if answer.status_code == 410:
            raise CursorExpired
        answer.raise_for_status()
        page: dict[str, Any] = answer.json()
        return page

    def pull(self, min_position: int | None = None) -> int:
        """Pull until caught up; the number of changes applied."""
        applied = 0
        while True:
            try:
                page = self._page(min_position)
            except CursorExpired:
                self._reset()
                continue
            applied += self._apply(page)
            if not page["has_more"]:
                return applied

    # -- stream -----------------------------------------------------------------

    def stream(self, stop: Callable[[], bool], *, seconds: float | None = None) -> int:
        """Follow /sync/stream from the stored cursor until ``stop()`` or
        ``seconds`` pass, both looked at after every event and heartbeat (the
        server sends one after 15 s without data); reconnects with
        Last-Event-ID when the connection drops. The number of changes applied."""
        deadline = None if seconds is None else time.monotonic() + seconds
        applied = 0
        while not stop() and (deadline is None or time.monotonic() < deadline):
            headers = {} if self.cursor is None else {"Last-Event-ID": self.cursor}
            try:
                with self.http.stream(
                    "GET", "/sync/stream", headers=headers, timeout=httpx.Timeout(30, read=20)
                ) as answer:
                    if answer.status_code == 410:
                        self._reset()
                        applied += self.pull()
                        continue
                    answer.raise_for_status()
                    for event, data in _sse_events(answer.iter_lines()):
                        if event == "changes":
                            applied += self._apply(json.loads(data))
                        elif event == "reset":  # the cursor expired while we streamed
                            self._reset()
                            applied += self.pull()
                            break
                        if stop() or (deadline is not None and time.monotonic() >= deadline):
                            return applied
            except (httpx.TransportError, httpx.RemoteProtocolError):
                time.sleep(2)  # the server's `retry:` hint; then resume from the cursor
        return applied

    # -- offline edits and push -------------------------------------------------

    def queue(self, name: str, args: dict[str, Any], base_version: int | None = None) -> str:
        """Queue a mutation for the next push; its id makes the push idempotent."""
        mutation_id = f"m-{uuid.uuid4()}"
        self.db.execute(
            "INSERT INTO queue (mutation_id, name, args, base_version) VALUES (?, ?, ?, ?)",
            (mutation_id, name, json.dumps(args), base_version),
        )
        return mutation_id

    def create_entry(self, title: str, body: str, tags: Sequence[str] = ()) -> str:
        """An entry made offline: its id is ours, so later edits can name it."""
        entry_id = str(uuid.uuid4())
        self.queue(
            "entry.create", {"id": entry_id, "title": title, "body": body, "tags": list(tags)}
        )
        return entry_id

    def edit_entry(self, entry_id: str, **fields: Any) -> None:
        """An edit made on the local copy's version (a conflict if it moved on)."""
        row = self.db.execute(
            "SELECT version FROM items WHERE entity = 'entry' AND id = ?", (entry_id,)
        ).fetchone()
        self.queue("entry.edit", {"id": entry_id, **fields}, row[0] if row else None)

    def push(self) -> PushOutcome:
        """Send the queue in order, then pull what it changed."""
        outcome = PushOutcome()
        retry_later: set[str] = set()
        while batch := [m for m in self.queued() if m["id"] not in retry_later][:PUSH_BATCH]:
            answer = self.http.post("/sync/push", json={"mutations": batch})
            answer.raise_for_status()
            body = answer.json()
            done: list[str] = []
            for result in body["results"]:
                if result["status"] == "applied":
                    outcome.applied += 1
                    done.append(result["id"])
                elif result["error"]["code"] in RETRYABLE:
                    retry_later.add(result["id"])
                else:
                    outcome.failed.append(result)
                    done.append(result["id"])
            self.db.executemany("DELETE FROM queue WHERE mutation_id = ?", [(i,) for i in done])
            if body["position"] is not None:
                outcome.position = max(outcome.position or 0, body["position"])
        outcome.kept = len(retry_later)
        self.pull(min_position=outcome.position)
        return outcome


def _sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) of each Server-Sent Event, and ("heartbeat", "") for each
    comment, so a reader can look at the clock while nothing changes."""
    event = "message"
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            yield "heartbeat", ""
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="Chronik's base URL")
    parser.add_argument("--key", required=True, help="an API key, chk_...")
    parser.add_argument("--team", required=True, help="the team's id")
    parser.add_argument("--db", required=True, help="the local SQLite file")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("pull", help="pull until caught up")
    stream = actions.add_parser("stream", help="follow the live stream")
    stream.add_argument("--seconds", type=float, default=None, help="stop after this long")
    add = actions.add_parser("add-entry", help="queue a new entry (offline)")
    add.add_argument("--title", required=True)
    add.add_argument("--body", default="")
    add.add_argument("--tag", action="append", default=[])
    edit = actions.add_parser("edit-entry", help="queue an edit of an entry (offline)")
    edit.add_argument("id")
    edit.add_argument("--title")
    edit.add_argument("--body")
    actions.add_parser("push", help="send the queued edits, then pull")
    actions.add_parser("show", help="print the local copy and the queue")
    args = parser.parse_args(argv)

    with closing(SyncClient(args.url, args.key, args.team, args.db)) as client:
        match args.action:
            case "pull":
                print(json.dumps({"applied": client.pull(), "cursor": client.cursor}))
            case "stream":
                try:
                    applied = client.stream(lambda: False, seconds=args.seconds)
                except KeyboardInterrupt:
                    applied = 0
                print(json.dumps({"applied": applied, "cursor": client.cursor}))
            case "add-entry":
                print(json.dumps({"queued": client.create_entry(args.title, args.body, args.tag)}))
            case "edit-entry":
                fields = {k: v for k, v in (("title", args.title), ("body", args.body)) if v}
                client.edit_entry(args.id, **fields)
                print(json.dumps({"queued": args.id}))
            case "push":
                outcome = client.push()
                print(json.dumps(outcome.__dict__))
            case "show":
                items = [{"entity": e, "id": i, "data": d} for (e, i), d in client.items().items()]
                print(json.dumps({"items": items, "queue": client.queued()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
