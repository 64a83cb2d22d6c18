"""Process memory: keep glibc from hoarding freed memory.

glibc serves an allocation above its mmap threshold with a mapping of its own,
returned to the system when freed; but each such free raises the threshold (up
to 32 MiB), after which large transient buffers come from the malloc arenas,
which keep what is freed. Under 32 concurrent commands an API process so
settled at 340-480 MB, almost all of it free arena memory (`malloc_trim`
took it to 93 MB); with the threshold fixed at 128 KiB it stays at about
93 MB at the same throughput (bench B1; `docs/operations.md`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["MMAP_THRESHOLD", "bound_malloc"]

MMAP_THRESHOLD = 128 * 1024
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
