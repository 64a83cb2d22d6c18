"""The soak's client side: a steady, open-loop mix of requests on asyncio.

Operations are started on a fixed schedule (``rate`` per second, whatever the
server's speed), chosen from a fixed cycle so the mix is the same in every
minute: commands (create, edit, delete entries, with Idempotency-Keys), reads
(a list page, one entry), incremental sync pulls. A few SSE streams stay open
throughout. Every answer's status is counted per kind; a transport failure is
counted as ``ERR:<exception>``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["EXPECTED_REFUSALS", "LoadStats", "SoakTeam", "drive"]

# Statuses that are answers, not errors, under load: a lost race reported
# (409) and the rate limit (429). The soak does not provoke either.
EXPECTED_REFUSALS = frozenset({409, 429})
# One cycle of operations: 2 creates, 1 edit, 1 delete (of an entry made to be
# deleted), 3 reads, 1 sync pull per 8 operations.
CYCLE = ("create", "read_list", "edit", "sync", "create", "read_one", "delete", "read_list")
IN_FLIGHT = 64  # operations running at once at most; more are counted as late


@dataclass
class SoakTeam:
    team_id: str
    key: str
    kept: list[tuple[str, int]] = field(default_factory=list)  # (entry id, its last position)
    doomed: list[str] = field(default_factory=list)  # entries made to be deleted
    cursor: str | None = None
    created: int = 0

    @property
    def path(self) -> str:
        return f"/v1/teams/{self.team_id}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class LoadStats:
    statuses: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    late: int = 0  # operations not started on time: IN_FLIGHT were still running
    sse_events: Counter[int] = field(default_factory=Counter)  # stream -> `changes` events
    sse_reconnects: int = 0

    def count(self, kind: str, status: str, started: float) -> None:
        self.statuses[kind][status] += 1
        self.latencies_ms[kind].append((time.monotonic() - started) * 1000)

    def errors(self) -> dict[str, dict[str, int]]:
        """Answers that are neither 2xx nor an expected refusal, per kind."""
        found: dict[str, dict[str, int]] = {}
        for kind, counts in self.statuses.items():
            bad = {
                status: n
                for status, n in counts.items()
                if not (status.startswith("2") or status in {str(s) for s in EXPECTED_REFUSALS})
            }
            if bad:
                found[kind] = bad
        return found


async def _operation(
    client: httpx.AsyncClient, kind: str, team: SoakTeam, n: int, stats: LoadStats
) -> None:
    started = time.monotonic()
    kind = _possible(kind, team)
    try:
        status = str((await _OPERATIONS[kind](client, team, n)).status_code)
    except httpx.HTTPError as exc:
        status = f"ERR:{type(exc).__name__}"
    stats.count(kind, status, started)


def _possible(kind: str, team: SoakTeam) -> str:
    """``kind``, or a create while the team has no entry to apply it to."""
    if (kind in {"edit", "read_one"} and not team.kept) or (kind == "delete" and not team.doomed):
        return "create"
    return kind


async def _create(client: httpx.AsyncClient, team: SoakTeam, n: int) -> httpx.Response:
    entry_id = str(uuid.uuid4())
    body = {"id": entry_id, "title": f"soak {n}", "body": "notes " * 20, "tags": ["soak"]}
    headers = {**team.auth, "Idempotency-Key": f"soak-{entry_id}"}
    response = await client.post(f"{team.path}/entries", json=body, headers=headers)
    if response.status_code == 201:
        team.created += 1
        # One entry in four is made to be deleted; the others are read and edited.
        if team.created % 4 == 0:
            team.doomed.append(entry_id)
        else:
            team.kept.append((entry_id, response.json()["position"]))
    return response


async def _edit(client: httpx.AsyncClient, team: SoakTeam, n: int) -> httpx.Response:
    index = n % len(team.kept)
    entry_id, _ = team.kept[index]
    response = await client.patch(
        f"{team.path}/entries/{entry_id}", json={"body": f"edited {n}"}, headers=team.auth
    )
    if response.status_code == 200:
        team.kept[index] = (entry_id, response.json()["position"])
    return response


async def _delete(client: httpx.AsyncClient, team: SoakTeam, _: int) -> httpx.Response:
    doomed = team.doomed.pop(0)
    return await client.delete(f"{team.path}/entries/{doomed}", headers=team.auth)


async def _read_one(client: httpx.AsyncClient, team: SoakTeam, n: int) -> httpx.Response:
    # Read-your-writes: at least the entry's last write, as a client would ask.
    entry_id, position = team.kept[n % len(team.kept)]
    return await client.get(
        f"{team.path}/entries/{entry_id}",
        headers={**team.auth, "Chronik-Min-Position": str(position)},
    )


async def _read_list(client: httpx.AsyncClient, team: SoakTeam, _: int) -> httpx.Response:
    return await client.get(f"{team.path}/entries?limit=20", headers=team.auth)


async def _sync(client: httpx.AsyncClient, team: SoakTeam, _: int) -> httpx.Response:
    query = f"?limit=200&cursor={team.cursor}" if team.cursor else "?limit=200"
    response = await client.get(f"{team.path}/sync{query}", headers=team.auth)
    if response.status_code == 200:
        team.cursor = response.json()["cursor"]
    return response


_OPERATIONS: dict[str, Callable[[httpx.AsyncClient, SoakTeam, int], Awaitable[httpx.Response]]] = {
    "create": _create,
    "edit": _edit,
    "delete": _delete,
    "read_one": _read_one,
    "read_list": _read_list,
    "sync": _sync,
}


async def _stream(
    base_url: str, team: SoakTeam, number: int, stats: LoadStats, stop: asyncio.Event
) -> None:
    """One SSE client: counts `changes` events, reconnects (from its last id) if cut."""
    last_id: str | None = None
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(10, read=60)) as client:
        while not stop.is_set():
            headers = {**team.auth, "Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            started = time.monotonic()
            try:
                async with client.stream("GET", f"{team.path}/sync/stream", headers=headers) as r:
                    stats.count("sse_open", str(r.status_code), started)
                    if r.status_code != 200:
                        await asyncio.wait_for(stop.wait(), 1.0)
                        continue
                    async for line in r.aiter_lines():
                        if line.startswith("id: "):
                            last_id = line[4:]
                        elif line == "event: changes":
                            stats.sse_events[number] += 1
                        if stop.is_set():
                            return
            except TimeoutError:
                continue
            except httpx.HTTPError as exc:
                if stop.is_set():
                    return
                stats.count("sse_open", f"ERR:{type(exc).__name__}", started)
            if not stop.is_set():
                stats.sse_reconnects += 1


async def drive(
    base_url: str,
    teams: list[SoakTeam],
    *,
    rate: float,
    seconds: float,
    streams: int,
    stats: LoadStats,
) -> None:
    """``rate`` operations/s for ``seconds``, and ``streams`` SSE clients open meanwhile."""
    stop = asyncio.Event()
    sse = [
        asyncio.create_task(_stream(base_url, teams[k % len(teams)], k, stats, stop))
        for k in range(streams)
    ]
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    gate = asyncio.Semaphore(IN_FLIGHT)
    running: set[asyncio.Task[Any]] = set()

    async def gated(kind: str, team: SoakTeam, n: int) -> None:
        try:
            await _operation(client, kind, team, n, stats)
        finally:
            gate.release()

    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
        start = time.monotonic()
        for n in itertools.count():
            due = start + n / rate
            if due - start >= seconds:
                break
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)  # the schedule: a steady offered rate
            if gate.locked():
                stats.late += 1
            await gate.acquire()
            kind = CYCLE[n % len(CYCLE)]
            team = teams[(n // len(CYCLE)) % len(teams)]  # each team gets whole cycles
            task = asyncio.create_task(gated(kind, team, n))
            running.add(task)
            task.add_done_callback(running.discard)
        await asyncio.gather(*running)
    stop.set()
    for task in sse:
        task.cancel()
    await asyncio.gather(*sse, return_exceptions=True)
