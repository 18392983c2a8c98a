"""glibc's malloc, set for a long-running router: its arenas capped, its mmap threshold fixed,
and what a hot swap freed given back (``streams.cli`` sets the first two at start; the
``ScorerHolder`` trims after each swap). Each is a no-op on another libc."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter, what MALLOC_ARENA_MAX sets
M_MMAP_THRESHOLD = -3  # what MALLOC_MMAP_THRESHOLD_ sets
MMAP_THRESHOLD = 256 * 1024  # blocks this large and larger: a mapping of their own


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def _mallopt(param: int, value: int) -> bool:
    try:
        return bool(_libc().mallopt(param, value))
    except (OSError, AttributeError):
        return False


def cap_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas for this process, unless ``MALLOC_ARENA_MAX`` already says.

    Each thread that scores (the event loop's executor, the encoder's pool) would get an arena of
    its own, and each batch's buffers of other sizes fragment them: a 10-minute ``make soak``
    router grew 347 -> 400 MB (+15%) at 19.5 prompts/s without a cap, 339 -> 377 MB (+11%) at
    21.9/s with two (docs/measurements.md, "Soak"). False where it does not apply (another libc,
    or the user's setting).
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    return _mallopt(M_ARENA_MAX, arenas)


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes, unless ``MALLOC_MMAP_THRESHOLD_`` says.

    By default glibc raises the threshold to the size of every mapped block freed (up to 32 MiB).
    A hot swap frees a version's arrays (the kNN memory alone is 3.4 MB); from then on every array
    below that size came from the arenas, where the next version's long-lived arrays land among
    the batches' short-lived buffers on the executor threads, and the holes the freed version
    leaves are not returned: a router grew 341 -> 373 MB (+9%) over 91 swaps in 6 minutes
    (docs/measurements.md, "Soak"). Fixed (which also stops the adjustment), each block of 256 KiB
    or more is a mapping of its own, given back whole when freed: +1.9% over 101 swaps, and +2.0%
    from minute 10 to 30 of a 30-minute soak with 57. False where it does not apply.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    return _mallopt(M_MMAP_THRESHOLD, threshold)


def trim() -> bool:
    """Give the free memory at the arenas' ends and their free pages back to the OS
    (``malloc_trim(0)``): after a hot swap, the replaced version's small blocks. True when some
    was given back."""
    try:
        return bool(_libc().malloc_trim(0))
    except (OSError, AttributeError):
        return False
