"""Where each projection stands, for operators: CLI, /readyz and /metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from projections import registry
from projections.base import Projection

__all__ = ["ProjectionStatus", "statuses"]


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    name: str
    generation: int | None
    version: int | None
    state: str  # active, building, or missing (no worker has run it yet)
    position: int
    lag: int
    applied_events: int
    stalled_position: int | None
    stalled_error: str | None
    updated_at: datetime | None

    @property
    def stalled(self) -> bool:
        return self.stalled_position is not None


def _status(g: registry.Generation, head: int) -> ProjectionStatus:
    return ProjectionStatus(
        name=g.projection,
        generation=g.id,
        version=g.version,
        state=g.state,
        position=g.position,
        lag=max(head - g.position, 0),
        applied_events=g.applied_events,
        stalled_position=g.stalled_position,
        stalled_error=g.stalled_error,
        updated_at=g.updated_at,
    )


def statuses(
    conn: psycopg.Connection[Any], projections: Sequence[Projection], head: int
) -> list[ProjectionStatus]:
    """Every live generation, plus a "missing" line for a projection that has none."""
    found = registry.generations(conn)
    named = {g.projection for g in found}
    rows = [_status(g, head) for g in found]
    rows += [
        ProjectionStatus(p.name, None, None, "missing", 0, head, 0, None, None, None)
        for p in projections
        if p.name not in named
    ]
    return sorted(rows, key=lambda r: (r.name, r.generation or 0))
