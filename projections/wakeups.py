"""One LISTEN connection per process that wakes every runner when events are
committed, instead of one listening connection per projection."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final

import psycopg
import structlog
from psycopg import sql

__all__ = ["CONTROL_CHANNEL", "Wakeups"]

log = structlog.get_logger(__name__)

# Operators' commands (retry, skip, rebuild) notify here so runners act at once.
CONTROL_CHANNEL: Final = "chronik_projection_control"


class Wakeups:
    """Sets every subscriber's event on each notification of ``channels``.

    Runners also poll on a timer, so a notification lost while this
    connection reconnects costs latency, never correctness.
    """

    def __init__(self, connect: Callable[[], psycopg.Connection[object]], channels: list[str]):
        self._connect = connect
        self._channels = channels
        self._subscribers: list[threading.Event] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="projection-wakeups", daemon=True)

    def subscribe(self) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._subscribers.append(event)
        return event

    def unsubscribe(self, event: threading.Event) -> None:
        with self._lock:
            self._subscribers.remove(event)

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        self._stopping.set()
        if wait and self._thread.is_alive():
            self._thread.join(timeout=5)

    def wake_all(self) -> None:
        with self._lock:
            for event in self._subscribers:
                event.set()

    def _run(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                with self._connect() as conn:
                    for channel in self._channels:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    delay = 0.5
                    # What was committed while we were not listening.
                    self.wake_all()
                    while not self._stopping.is_set():
                        if any(True for _ in conn.notifies(timeout=0.5, stop_after=1)):
                            self.wake_all()
            except psycopg.Error as exc:
                log.warning("projection wakeups lost their connection", error=str(exc))
                self._stopping.wait(delay)
                delay = min(delay * 2, 5.0)
