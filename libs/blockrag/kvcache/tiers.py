"""MemoryTiers: a replica's in-process KV tiers, fastest first, in front of the object store.

On a GPU replica: device memory, then pinned host memory (the engine reads a pinned block
straight into its cache, bench/gpu/RESULTS.md: 1.3x the bare copy at 32K on an 8B model, where a
store read costs a fetch and a decode). On a CPU replica: host memory alone. Each tier is a
ByteLRU bounded in bytes (a CompressedKVLRU where the deployment compresses KV) that counts its
own hits and misses. A block evicted from a tier moves down to the next instead of being
dropped; a hit in a lower tier promotes the block to the first tier (and whatever that evicts
moves down in turn). A block larger than a tier's whole capacity skips it.

A lookup walks the tiers in order, so a block found in the second tier counts one miss in the
first and one hit in the second: each tier's hit rate is its own.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch

from blockrag.attention import BlockKV
from blockrag.kvcache.compression import KVCompression
from blockrag.kvcache.memory_tier import ByteLRU, TierStats, host_tier

Place = Callable[[BlockKV], BlockKV]  # moves a block to where a tier keeps it


@dataclass(frozen=True)
class MemoryTier:
    """name: its label (`device`, `pinned`, `host`); lru: its entries; place: applied to a block
    entering it (e.g. `.to("cpu").pin_memory()`), None to keep blocks where they are."""

    name: str
    lru: ByteLRU
    place: Place | None = None


class MemoryTiers:
    """ByteLRU's interface as the resolver uses it (get, put, stats) over several tiers, fastest first."""

    def __init__(self, tiers: Sequence[MemoryTier]):
        if not tiers:
            raise ValueError("MemoryTiers needs at least one tier")
        names = [t.name for t in tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must differ, got {names}")
        self.tiers = list(tiers)

    def get(self, key: Hashable) -> BlockKV | None:
        """The block (promoted to the first tier that takes it), or None when no tier has it."""
        for i, tier in enumerate(self.tiers):
            kv = tier.lru.get(key)
            if kv is None:
                continue
            if i == 0 or kv.nbytes > self.tiers[0].lru.capacity_bytes:
                return kv  # already first, or too large to move up: served from where it is
            tier.lru.pop(key)
            return self._put(0, key, kv)
        return None

    def put(self, key: Hashable, value: BlockKV, nbytes: int | None = None) -> None:
        """Keep ``value`` in the first tier that can hold it (``nbytes``: its size, default its
        own); any other copy of ``key`` in a lower tier is dropped, never served stale."""
        for tier in self.tiers[1:]:
            tier.lru.pop(key)
        self._put(0, key, value, nbytes)

    def __contains__(self, key: object) -> bool:
        return any(key in tier.lru for tier in self.tiers)

    def __len__(self) -> int:
        return sum(len(tier.lru) for tier in self.tiers)

    def stats(self) -> TierStats:
        """All tiers as one: entries and bytes summed; hits in any tier; misses and evictions of
        the last tier (a lookup none answered, a block that left memory altogether)."""
        each = [tier.lru.stats() for tier in self.tiers]
        return TierStats(entries=sum(s.entries for s in each), bytes=sum(s.bytes for s in each),
                         capacity_bytes=sum(s.capacity_bytes for s in each), hits=sum(s.hits for s in each),
                         misses=each[-1].misses, evictions=each[-1].evictions)

    def tier_stats(self) -> dict[str, TierStats]:
        """Each tier's own counters, by name (hits and misses per tier for the metrics)."""
        return {tier.name: tier.lru.stats() for tier in self.tiers}

    def _put(self, i: int, key: Hashable, kv: BlockKV, nbytes: int | None = None) -> BlockKV:
        """Put into tier i, or the next that can hold it; evictions move down. Returns the block
        as the tier that took it keeps it (the input when none did)."""
        while i < len(self.tiers):
            tier = self.tiers[i]
            size = kv.nbytes if nbytes is None else nbytes
            if size <= tier.lru.capacity_bytes:
                placed = tier.place(kv) if tier.place is not None else kv
                for old_key, old_kv, _ in tier.lru.put(key, placed, size):
                    if i + 1 < len(self.tiers):
                        self._put(i + 1, old_key, old_kv)
                return placed
            i += 1
        return kv


def replica_tiers(device: torch.device | str, memory_bytes: int, pinned_bytes: int = 0,
                  compression: KVCompression | str = KVCompression.NONE) -> MemoryTiers:
    """A Generation replica's tiers. On CUDA: `device` (memory_bytes of blocks where the engine
    uses them, compressed as the deployment says), then `pinned` when pinned_bytes > 0 (host
    memory the engine reads in place; kept uncompressed, as a compressed copy is not pinned
    memory). Elsewhere: `host` (memory_bytes, compressed as the deployment says)."""
    device = torch.device(device)
    if device.type != "cuda":
        return MemoryTiers([MemoryTier("host", host_tier(memory_bytes, compression))])
    tiers = [MemoryTier("device", host_tier(memory_bytes, compression), lambda kv: kv.to(device))]
    if pinned_bytes:
        tiers.append(MemoryTier("pinned", ByteLRU(pinned_bytes), lambda kv: kv.to("cpu").pin_memory()))
    return MemoryTiers(tiers)
