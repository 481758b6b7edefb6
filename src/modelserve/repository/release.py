"""Give freed memory back to the operating system after a model unloads.

glibc's allocator keeps freed blocks in its arenas (one per thread that allocated), so a process that
loads and unloads sessions on worker threads keeps a high-water mark of resident memory even though
nothing leaks (Triton #4966 is the peers' version of this). ``malloc_trim(0)`` returns the free pages of
every arena. On other C libraries this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

__all__ = ["limit_malloc_arenas", "release_free_memory"]

_M_ARENA_MAX = -8  # glibc's mallopt parameter number


@functools.cache
def _libc_function(symbol: str) -> Callable[..., int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function: Callable[..., int] = getattr(ctypes.CDLL(name), symbol)
    except (OSError, AttributeError):
        return None
    return function


def limit_malloc_arenas(count: int = 2) -> None:
    """Cap glibc's malloc arenas (default: 8 per core). Loads, unloads and inference run on many
    threads; each may get an arena of its own that keeps freed memory, so resident memory after a model
    unloads depends on which threads ran it. Two arenas keep that small at no measurable cost here."""
    mallopt = _libc_function("mallopt")
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, count)


def release_free_memory() -> None:
    """Return free heap pages to the OS (glibc only; a no-op elsewhere). Blocking, cheap (a few ms)."""
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(0)
