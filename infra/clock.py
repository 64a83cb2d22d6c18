"""The time schedulers go by: the wall clock, or (for tests and demos) a
clock that runs ``scale`` times faster from ``origin``. Every process given
the same origin and scale agrees on the time, so several schedulers can be
tested together on compressed time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from infra.settings import Settings

__all__ = ["Clock", "clock_from"]


@dataclass(frozen=True, slots=True)
class Clock:
    origin: datetime | None = None
    scale: float = 1.0

    def now(self) -> datetime:
        real = datetime.now(UTC)
        if self.origin is None or self.scale == 1.0:
            return real
        return self.origin + (real - self.origin) * self.scale

    def real_seconds(self, clock_seconds: float) -> float:
        """How long to wait in real time for ``clock_seconds`` to pass."""
        return clock_seconds / self.scale


def clock_from(settings: Settings) -> Clock:
    return Clock(settings.scheduler_time_origin, settings.scheduler_time_scale)
