"""The malloc threshold: fixed on glibc, and an operator's own setting wins.
A settled heap: frozen, and the young generation collected less often."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from infra.memory import YOUNG_THRESHOLD, bound_malloc


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_threshold_is_fixed_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert bound_malloc() is True


def test_an_operators_own_threshold_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert bound_malloc() is False


def test_a_settled_heap_is_frozen_and_collected_less_often() -> None:
    # In a process of its own: settling this one would freeze every test's objects.
    script = (
        "import gc; from infra.memory import settle_heap; "
        "before = gc.get_freeze_count(); settle_heap(); "
        "print(before, gc.get_freeze_count(), gc.get_threshold()[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    before, frozen, young = map(int, out)
    assert before == 0
    assert frozen > 1000  # the imports' objects, at least
    assert young == YOUNG_THRESHOLD
