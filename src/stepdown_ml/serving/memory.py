"""The allocators of a batch run: memory one block frees is kept for the next one.

Scoring a block allocates a few dozen arrays of one to ten megabytes (NumPy through the C
library's ``malloc``, Arrow through its jemalloc pool) and frees them before the next
block. Left as they are, both allocators hand that memory back to the kernel at once:

- glibc maps arrays above its mmap threshold (128 KB at start, raised to the largest one
  freed so far) on their own and unmaps them when freed, and trims the top of its heap
  whenever more than twice that threshold lies free there;
- jemalloc purges dirty pages on its decay timer.

Each block then takes a page fault for every 4 KB it gets back. Measured on 1M
out-of-vocabulary rows with two worker processes: 430,000 minor faults and about a second
of system CPU; with the settings below 74,000 faults, 0.26 s of system time, the run 10 %
faster, the same peak memory (docs/BENCHMARKS.md, "Batch scoring on every core").

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
# jemalloc: dirty pages are purged over this many milliseconds instead of at once.
DECAY_MS = 10_000


def tune_for_batch() -> dict[str, str | bool]:
    """Make Arrow's pool jemalloc (slow decay) and keep glibc's freed memory; say what was set.

    jemalloc as pyarrow's pool, measured earlier on 1M rows in one process: 2.33 s and
    201 MB peak RSS, against 2.61 s and 282 MB for the default mimalloc pool (which keeps
    the freed pages of the block buffers without reusing them well) and 2.56 s and 262 MB
    for the system allocator. Where pyarrow was built without jemalloc, its default pool
    stays. ``glibc`` is False on a C library without ``mallopt`` (musl, macOS).
    """
    with contextlib.suppress(NotImplementedError):
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(DECAY_MS)
    return {"arrow_pool": pa.default_memory_pool().backend_name, "glibc": _keep_freed_heap()}


def _keep_freed_heap() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # Both or neither: fixing the mmap threshold alone stops glibc from raising it, and a
    # trim threshold alone leaves every array above 128 KB mapped on its own.
    if not mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
