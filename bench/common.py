"""What every benchmark script shares: servers to run against, and the report."""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from pydantic import SecretStr

from infra import operations
from infra.db import PostgresTarget
from infra.devstack import DevStack
from infra.event_store import open_event_store
from infra.memory import settle_heap
from infra.migrations import migrate
from infra.settings import Settings, load_settings
from tests.projection_support import TeamFixture, create_team, seed_entries

__all__ = [
    "RESULTS",
    "SeededLog",
    "configured_servers",
    "fresh_database",
    "run_and_report",
    "seeded_log",
    "timed_rebuild",
]

RESULTS = Path(__file__).parent / "results"
Result = dict[str, Any]
# Databases made by this run, dropped when it ends (server URL, name).
_MADE: list[tuple[str, str]] = []


def fresh_database(settings: Settings) -> str:
    """A new migrated database on the configured (or embedded) server."""
    target = PostgresTarget.from_url(settings.database_url_value())
    name = f"chronik_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    _MADE.append((target.conninfo(), name))
    url = target.with_dbname(name).url()
    migrate(PostgresTarget.from_url(url).conninfo())
    return url


@dataclass(frozen=True)
class SeededLog:
    settings: Settings  # pointing at the seeded database
    team: TeamFixture


def seeded_log(settings: Settings, events: int) -> SeededLog:
    """A fresh database whose log holds ``events`` entry creations of one team."""
    url = fresh_database(settings)
    store = open_event_store(PostgresTarget.from_url(url), pool_size=2)
    team = create_team(store)
    seed_entries(store, team.owner, events)
    store.close()
    return SeededLog(settings.model_copy(update={"database_url": SecretStr(url)}), team)


def timed_rebuild(log: SeededLog, projection: str) -> float:
    """Seconds ``chronik projections rebuild`` takes over the seeded log, with
    the heap settled first as that command does."""
    settle_heap()
    started = time.perf_counter()
    operations.rebuild(log.settings, projection)
    return time.perf_counter() - started


def _drop_made_databases() -> None:
    while _MADE:
        conninfo, name = _MADE.pop()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(name)))


@contextlib.contextmanager
def configured_servers() -> Iterator[Settings]:
    """Settings for CHRONIK_DATABASE_URL/NATS_URL, or for embedded servers
    started when they are unset; at the end the databases ``fresh_database``
    made are dropped and embedded servers stopped."""
    settings = load_settings()
    stack = None
    if settings.database_url is None or settings.nats_url is None:
        stack = DevStack(settings.model_copy(update={"data_dir": Path(tempfile.mkdtemp())}))
        settings = stack.start()
    try:
        yield settings
    finally:
        _drop_made_databases()
        if stack is not None:
            stack.stop()


def run_and_report(name: str, scenarios: Callable[[Settings], list[Result]]) -> None:
    """Run ``scenarios`` against the configured servers; write JSON to
    bench/results and a table to stdout."""
    with configured_servers() as settings:
        results = scenarios(settings)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    for result in results:
        print(f"\n### {result.pop('scenario')}\n| metric | value |\n|---|---|")
        for key, value in result.items():
            print(f"| {key} | {value} |")
    print(f"\nresults: {out}")
