"""Locks by key, made on first use and gone with their last holder."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Hashable, Iterator
from contextlib import contextmanager

__all__ = ["KeyedLocks"]


class KeyedLocks:
    """One lock per key, for as long as some thread holds or waits for it."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[Hashable, threading.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._guard = threading.Lock()

    def lock(self, key: Hashable) -> threading.Lock:
        with self._guard:
            found = self._locks.get(key)
            if found is None:
                found = self._locks[key] = threading.Lock()
            return found

    @contextmanager
    def held(self, key: Hashable | None) -> Iterator[None]:
        """Holds the lock of ``key``; no key, no lock."""
        if key is None:
            yield
            return
        with self.lock(key):
            yield
