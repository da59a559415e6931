"""HostAllocator: glibc malloc's policy for the processes that hold block KV in host memory.

Why (issue 14, bench/load.py with ingests): a generation replica's private memory grew ~200 MB
in two minutes outside every bounded cache, while its live tensors did not grow: the growth was
memory freed and kept by glibc (mallinfo2's free bytes in the arenas 498 -> 762 MB; malloc_trim(0)
gave 667 MB back). glibc serves an allocation above its mmap threshold (128 KiB at start) with a
mapping of its own, returned to the system when freed, but each such free raises the threshold to
the freed size (up to 32 MiB). From then on blocks' KV (46 KB a token on the default model: about
7 MB a block), decoded frames and activations are carved from the arenas, and an arena returns
memory only from its top: a freed chunk below a live one stays the process's, and new block
sizes (new documents) keep adding such chunks. A fixed threshold turns the raising off: every
allocation from ``MMAP_THRESHOLD_BYTES`` up is its own mapping, unmapped when freed, so the
process holds what it uses. The cost is a fresh mapping's page faults for each large allocation
(about what glibc does before its first large free).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger("blockrag.host_allocator")

MMAP_THRESHOLD_BYTES = 1 << 20  # from 1 MiB up, an allocation is its own mapping
_M_MMAP_THRESHOLD = -3  # glibc's <malloc.h> parameter number


def unpool_large_allocations(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold_bytes`` for this process (see the module
    docstring); False where the C library is not glibc (nothing is changed there). Call it once,
    early in a process that allocates large host tensors of many sizes: it applies to later
    allocations."""
    if not 0 < threshold_bytes <= 32 << 20:  # glibc refuses a threshold over HEAP_MAX_SIZE / 2
        raise ValueError(f"threshold_bytes must be in (0, 32 MiB], got {threshold_bytes}")
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes):
        log.warning("mallopt(M_MMAP_THRESHOLD, %d) failed: large freed tensors may stay in the process", threshold_bytes)
        return False
    return True
