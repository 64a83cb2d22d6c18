"""The load generator every HTTP scenario uses, for both sides of a ratio.

It runs in a process of its own (``python -m bench.load OUT`` reads a job as
JSON on stdin and writes the result as JSON to OUT), so its CPU is not the
server's. Each connection is a keep-alive socket speaking hand-written
HTTP/1.1 on uvloop, closed-loop: send, read the whole answer, send the next.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvloop

__all__ = ["LoadJob", "LoadResult", "Target", "run_load"]


@dataclass(frozen=True)
class Target:
    """Where one connection posts, and with which headers (e.g. its team's key)."""

    path: str
    headers: dict[str, str]


@dataclass(frozen=True)
class LoadJob:
    port: int
    targets: list[Target]  # one connection each
    seconds: float
    # Each request's body is this document with "title" made unique.
    body: dict[str, Any] = field(default_factory=dict)
    warmup_seconds: float = 1.0


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    statuses: dict[str, int]
    latencies_ms: list[float]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def run_load(job: LoadJob) -> LoadResult:
    """Runs ``job`` in a separate process and returns what it measured."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "bench.load", out.name],
            input=json.dumps(asdict(job)).encode(),
            check=True,
            timeout=job.seconds + job.warmup_seconds + 120,
        )
        return LoadResult(**json.loads(Path(out.name).read_text()))


async def _read_answer(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    status = head[9:12]
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _connection(
    job: LoadJob, target: Target, measure_from: float, until: float, out: LoadResult
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", job.port)
    fixed = f"POST {target.path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
    fixed += "".join(f"{k}: {v}\r\n" for k, v in target.headers.items())
    try:
        while (now := time.perf_counter()) < until:
            body = orjson.dumps(job.body | {"title": f"load {uuid.uuid4().hex}"})
            writer.write(f"{fixed}content-length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            status = (await _read_answer(reader)).decode()
            if now >= measure_from:
                out.latencies_ms.append((time.perf_counter() - now) * 1000)
                out.statuses[status] = out.statuses.get(status, 0) + 1
    finally:
        writer.close()


async def _run(job: LoadJob) -> LoadResult:
    out = LoadResult(requests=0, seconds=job.seconds, statuses={}, latencies_ms=[])
    measure_from = time.perf_counter() + job.warmup_seconds
    until = measure_from + job.seconds
    await asyncio.gather(*(_connection(job, t, measure_from, until, out) for t in job.targets))
    return LoadResult(len(out.latencies_ms), job.seconds, out.statuses, out.latencies_ms)


def main() -> None:
    raw = json.loads(sys.stdin.read())
    job = LoadJob(**raw | {"targets": [Target(**t) for t in raw["targets"]]})
    result = uvloop.run(_run(job))
    # A file, not stdout: the event loop may leave stdout non-blocking, and a
    # large write to a pipe would then be cut short.
    Path(sys.argv[1]).write_text(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
