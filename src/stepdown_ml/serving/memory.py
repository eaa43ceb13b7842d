"""The allocators of a batch run: memory one block frees is kept for the next one.

Scoring a block allocates a few dozen arrays of one to ten megabytes (NumPy through the C
library's ``malloc``, Arrow through its jemalloc pool) and frees them before the next
block. Left as it is, glibc hands the NumPy part back to the kernel at once: it maps
arrays above its mmap threshold (128 KB at start, raised to the largest one freed so far)
on their own and unmaps them when freed, and trims the top of its heap whenever more than
twice that threshold lies free there. Each block then takes a page fault for every 4 KB
it gets back. Measured on 1M out-of-vocabulary rows with two worker
processes: about 440,000 minor faults and 1.2 s of system CPU; with the settings below
about 85,000 faults and 0.4 s, the run 14 % faster, peak memory about 30 MB higher
(docs/BENCHMARKS.md, "Batch scoring on every core"). Arrow's jemalloc pool is left with
its own decay: ``pyarrow.jemalloc_set_decay_ms`` only reaches arenas created after the
call, and the arena already in use keeps purging (measured: the same faults either way).

These are process-wide settings, so the CLI and Spark's Python daemon make them, before
they fork their workers (which inherit them), never the library on import.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

import pyarrow as pa

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Arrays up to glibc's largest mmap threshold come from the heap; setting it fixes it there.
MMAP_THRESHOLD_BYTES = 32 << 20
# Free memory at the heap's top is returned to the kernel only past this much.
TRIM_THRESHOLD_BYTES = 256 << 20


def tune_for_batch() -> dict[str, str | bool]:
    """Make Arrow's pool jemalloc and keep glibc's freed memory; say what was set.

    jemalloc as pyarrow's pool, measured earlier on 1M rows in one process: 2.33 s and
    201 MB peak RSS, against 2.61 s and 282 MB for the default mimalloc pool (which keeps
    the freed pages of the block buffers without reusing them well) and 2.56 s and 262 MB
    for the system allocator. Where pyarrow was built without jemalloc, its default pool
    stays. ``glibc`` is False on a C library without a working ``mallopt`` (musl, macOS);
    it says the call was taken, not that glibc's malloc is the one in use (a preloaded
    allocator would ignore it).
    """
    with contextlib.suppress(NotImplementedError):
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    return {"arrow_pool": pa.default_memory_pool().backend_name, "glibc": _keep_freed_heap()}


def _keep_freed_heap() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # Both are needed: fixing the mmap threshold alone stops glibc from raising it, and a
    # trim threshold alone leaves every array above 128 KB mapped on its own. glibc refuses
    # only an mmap threshold above its maximum; it always takes a trim threshold.
    if not mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
