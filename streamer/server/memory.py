"""The server's two allocator settings: few heaps, and freed memory handed back to the OS.

Sessions allocate megabyte-sized buffers (frames, flow maps, codec buffers) in worker threads;
glibc keeps what those threads free in per-thread heaps for reuse and returns it to the OS
only when asked. ``limit_heaps`` (at start) keeps the heaps few; ``release_free_heap`` (after
the post-close garbage collection) makes the server's RSS follow its live sessions instead of
its busiest moment. Measured in docs/benchmarks.md (soak). No-ops where glibc is not the
allocator.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable

M_ARENA_MAX = -8  # glibc mallopt parameter
MAX_HEAPS = 2


@functools.cache
def _glibc_function(name: str) -> Callable[..., int] | None:
    """``name`` from the C library when it is glibc on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    lib = ctypes.util.find_library("c")
    if not lib:
        return None
    with contextlib.suppress(OSError, AttributeError):
        fn: Callable[..., int] = getattr(ctypes.CDLL(lib), name)
        return fn
    return None


def limit_heaps(count: int = MAX_HEAPS) -> bool:
    """Cap glibc's per-thread heaps (``M_ARENA_MAX``); call before the worker threads start.

    Each thread that allocates gets its own heap (up to 8 per core), and each keeps its own
    fragments: with the inference workers, aiortc's encoder executor and the event loop that is
    a dozen heaps slowly filling with holes. A few shared heaps keep the holes reusable.
    """
    mallopt = _glibc_function("mallopt")
    return bool(mallopt(M_ARENA_MAX, count)) if mallopt is not None else False


def release_free_heap() -> bool:
    """Return the free pages of every heap to the OS; True when glibc did it."""
    trim = _glibc_function("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True
