"""A rebuild of a 100,000-event log while clients keep reading: every read
answers 200 throughout, and afterwards readers see the new generation."""

from __future__ import annotations

import threading
from collections import Counter

from infra import operations
from infra.db import PostgresTarget
from infra.event_store import open_event_store
from infra.settings import Settings
from tests.e2e.conftest import Api
from tests.projection_support import (
    TeamFixture,
    create_team,
    live_generation,
    seed_entries,
    wait_caught_up,
)

EVENTS = 100_000


def _read_until(
    api: Api, team: TeamFixture, key: str, stop: threading.Event, seen: Counter[int]
) -> None:
    url = f"/v1/teams/{team.team_id}/entries"
    with api.client(key, session=False) as client:
        while not stop.is_set():
            page = client.get(url, params={"limit": 20, "tag": "s"})
            seen[page.status_code] += 1
            if page.status_code == 200 and page.json()["data"]:
                one = client.get(f"{url}/{page.json()['data'][-1]['id']}")
                seen[one.status_code] += 1


def test_reads_answer_throughout_a_rebuild(api: Api, api_settings: Settings) -> None:
    url = api_settings.database_url_value()
    store = open_event_store(PostgresTarget.from_url(url), pool_size=2)
    team = create_team(store)
    seed_entries(store, team.owner, EVENTS)
    store.close()
    old = wait_caught_up(url, "entries", timeout=240)
    owner_key = team.owner_key

    stop = threading.Event()
    seen: Counter[int] = Counter()
    readers = [
        threading.Thread(target=_read_until, args=(api, team, owner_key, stop, seen))
        for _ in range(2)
    ]
    for reader in readers:
        reader.start()
    try:
        message = operations.rebuild(api_settings, "entries")
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    new = live_generation(url, "entries")
    assert new is not None
    assert new.id != old.id
    assert new.applied_events == EVENTS
    assert "now serves reads" in message
    assert set(seen) == {200}, seen
    assert seen[200] > 10
