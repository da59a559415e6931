"""blockrag.host_allocator against glibc itself, in fresh processes: after a large freed tensor
(which raises glibc's mmap threshold unless it is fixed), blocks of new sizes with small live
tensors between them are freed. With the policy their memory goes back to the system; without
it (the control: the defect the policy fixes) it stays in the arenas as free bytes, the growth
bench/load.py measured in the generation replica."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from blockrag.host_allocator import unpool_large_allocations

SCRIPT = """
import ctypes, sys
import torch
from blockrag.host_allocator import unpool_large_allocations

if sys.argv[1] == "on":
    assert unpool_large_allocations()
fields = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = type("Mallinfo2", (ctypes.Structure,), {"_fields_": [(f, ctypes.c_size_t) for f in fields]})
big = torch.ones(16 << 20, dtype=torch.uint8)
del big
kept, blocks = [], []
for i in range(40):  # 40 blocks of 4 MiB and more, each with a 64 KiB tensor that stays
    blocks.append(torch.ones((4 << 20) + i * 4096, dtype=torch.uint8))
    kept.append(torch.ones(64 << 10, dtype=torch.uint8))
del blocks
print(libc.mallinfo2().fordblks)
"""

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the policy is glibc's")


def free_bytes_kept(policy: str) -> int:
    """Bytes free in the arenas after the blocks are freed, in a process with the policy on/off."""
    out = subprocess.run([sys.executable, "-c", SCRIPT, policy], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@glibc
def test_freed_blocks_go_back_to_the_system_with_the_policy_only():
    assert free_bytes_kept("on") < 4 << 20  # not one block's worth
    assert free_bytes_kept("off") > 40 * (4 << 20) * 3 // 4  # the control: most of the 160 MiB stays


def test_a_threshold_glibc_would_refuse_is_an_error():
    for bad in (0, -1, (32 << 20) + 1):
        with pytest.raises(ValueError, match="threshold_bytes must be in"):
            unpool_large_allocations(bad)
