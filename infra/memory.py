"""Process memory: keep glibc from hoarding freed memory, and keep the cyclic
garbage collector off what a process holds for its whole life.

glibc serves an allocation above its mmap threshold with a mapping of its own,
returned to the system when freed; but each such free raises the threshold (up
to 32 MiB), after which large transient buffers come from the malloc arenas,
which keep what is freed. Under 32 concurrent commands an API process so
settled at 340-480 MB, almost all of it free arena memory (`malloc_trim`
took it to 93 MB); with the threshold fixed at 128 KiB it stays at about
93 MB at the same throughput (bench B1; `docs/operations.md`).

CPython's collector walks every tracked object at each full collection, and
a long-running process holds about 100,000 of them from its imports alone
(modules, pydantic and FastAPI schemas). Decoding events allocates enough to
run a full collection every few thousand events: a rebuild of the entries
projection spent a third of its decode time there (bench B3,
`docs/benchmarks.md`). ``settle_heap`` moves what exists once a process has
started out of the collector's sight and collects the young generation less
often.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os

__all__ = ["MMAP_THRESHOLD", "YOUNG_THRESHOLD", "bound_malloc", "settle_heap"]

MMAP_THRESHOLD = 128 * 1024
# Allocations between young collections (CPython's default is 700): the
# young objects of a request mostly die by refcount before it is reached. A
# projection batch of 2,000 events allocates about this many, alive until the
# batch is written: at 10,000 each was walked several times and promoted, a
# twentieth of a rebuild's instructions (bench B3).
YOUNG_THRESHOLD = 50_000
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def bound_malloc(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fixes glibc's mmap threshold (which also stops it from rising). An
    operator's own ``MALLOC_MMAP_THRESHOLD_`` wins. False where there is
    nothing to do (set by the operator, or not glibc)."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))


def settle_heap() -> None:
    """Once a process has imported and wired what it keeps for its life: collect
    what is already garbage, exempt the rest from later collections (it is still
    freed by reference counting, just never walked), and collect the young
    generation every ``YOUNG_THRESHOLD`` allocations. Only for a process's
    entry point: in a test process it would exempt every earlier test's objects."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
