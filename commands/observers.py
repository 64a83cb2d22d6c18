"""How commands end, told to whoever wants to know (metrics).

The command layer is the only place that knows a command's name (the one the
audit trail records) whatever started it: an HTTP route, a sync push mutation,
the scheduler or the webhook health check. It reports each outcome to plain
callables that outer layers register, so it needs no metrics library:
dependencies keep pointing inward.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

__all__ = ["CommandObserver", "add_command_observer", "command_finished", "remove_command_observer"]

CommandObserver = Callable[[str, Exception | None], None]
"""Called with the command's name and the exception it ended with (None: success)."""

_lock = threading.Lock()
# Replaced, never mutated: command_finished reads it without the lock.
_observers: tuple[CommandObserver, ...] = ()


def add_command_observer(observer: CommandObserver) -> None:
    """Registers ``observer``; registering the same one again changes nothing
    (several apps may be built in one process, e.g. in tests)."""
    global _observers  # noqa: PLW0603 - the process-wide list of observers
    with _lock:
        if observer not in _observers:
            _observers = (*_observers, observer)


def remove_command_observer(observer: CommandObserver) -> None:
    global _observers  # noqa: PLW0603
    with _lock:
        _observers = tuple(o for o in _observers if o != observer)


def command_finished(name: str, error: Exception | None) -> None:
    for observer in _observers:
        # A metric must never turn a committed command into an error answer.
        with contextlib.suppress(Exception):
            observer(name, error)
