"""MemoryTiers: blocks evicted from a fast tier move down, a hit below promotes, each tier counts
its own hits and misses, oversized blocks skip a tier, no stale copy is served."""

from __future__ import annotations

import pytest
import torch

from blockrag.attention import BlockKV
from blockrag.kvcache.compression import KVCompression
from blockrag.kvcache.memory_tier import ByteLRU, CompressedKVLRU
from blockrag.kvcache.tiers import MemoryTier, MemoryTiers

TOKEN_BYTES = 2 * 2 * 1 * 4 * 4  # keys + values, 2 layers, 1 head, head dim 4, float32


def block(tokens: int, fill: float = 1.0) -> BlockKV:
    keys = torch.full((2, 1, tokens, 4), float(fill))  # float32: TOKEN_BYTES a token
    return BlockKV(tuple(range(tokens)), keys, keys.clone())


def two_tiers(fast_blocks: int, slow_blocks: int, placed: list[str]) -> MemoryTiers:
    def to(name: str):
        def place(kv: BlockKV) -> BlockKV:
            placed.append(name)
            return BlockKV(kv.token_ids, kv.keys.clone(), kv.values.clone())  # a copy, as .to(device) is
        return place

    return MemoryTiers([MemoryTier("device", ByteLRU(fast_blocks * 10 * TOKEN_BYTES), to("device")),
                        MemoryTier("pinned", ByteLRU(slow_blocks * 10 * TOKEN_BYTES), to("pinned"))])


def hits_misses(tiers: MemoryTiers) -> dict[str, tuple[int, int]]:
    return {name: (s.hits, s.misses) for name, s in tiers.tier_stats().items()}


def test_evicted_blocks_move_down_then_leave():
    placed: list[str] = []
    tiers = two_tiers(2, 2, placed)
    for key in "abcde":
        tiers.put(key, block(10))
    # a, b, c left the device tier in that order; a was then pushed out of pinned by c
    assert [k for k in "abcde" if k in tiers.tiers[0].lru] == ["d", "e"]
    assert [k for k in "abcde" if k in tiers.tiers[1].lru] == ["b", "c"]
    assert "a" not in tiers and len(tiers) == 4
    assert placed == ["device"] * 3 + ["pinned"] + ["device", "pinned", "device", "pinned"]
    assert tiers.stats().evictions == 1 and tiers.stats().bytes == 4 * 10 * TOKEN_BYTES


def test_a_hit_below_promotes_and_counts_per_tier():
    tiers = two_tiers(2, 2, [])
    for key in "abcd":
        tiers.put(key, block(10, fill=ord(key)))
    assert tiers.get("a").keys[0, 0, 0, 0].item() == ord("a")  # a in pinned: promoted to device
    assert [k for k in "abcd" if k in tiers.tiers[0].lru] == ["a", "d"]
    assert [k for k in "abcd" if k in tiers.tiers[1].lru] == ["b", "c"]  # c moved down to make room
    assert tiers.get("d") is not None and tiers.get("z") is None
    assert hits_misses(tiers) == {"device": (1, 2), "pinned": (1, 1)}
    stats = tiers.stats()
    assert (stats.hits, stats.misses, stats.entries) == (2, 1, 4)


def test_a_block_larger_than_a_tier_skips_it_and_is_not_promoted():
    placed: list[str] = []
    tiers = two_tiers(1, 4, placed)
    tiers.put("big", block(20))  # 20 tokens > the device tier's 10
    assert "big" in tiers.tiers[1].lru and placed == ["pinned"]
    assert tiers.get("big") is not None and "big" in tiers.tiers[1].lru and placed == ["pinned"]
    tiers.put("huge", block(50))  # larger than every tier: kept nowhere
    assert "huge" not in tiers


def test_put_drops_a_stale_copy_below():
    tiers = two_tiers(1, 2, [])
    tiers.put("a", block(10, fill=1.0))
    tiers.put("b", block(10))  # a moves down
    tiers.put("a", block(10, fill=2.0))  # a new value of a: into device, the old one must go
    assert "a" not in tiers.tiers[1].lru
    assert tiers.get("a").keys.max().item() == 2.0


def test_spilling_into_a_compressed_tier_keeps_the_block():
    tiers = MemoryTiers([MemoryTier("device", ByteLRU(10 * TOKEN_BYTES)),
                         MemoryTier("host", CompressedKVLRU(100 * TOKEN_BYTES, KVCompression.INT8_TOKEN))])
    first = BlockKV(tuple(range(10)), torch.randn(2, 1, 10, 4, generator=torch.Generator().manual_seed(0)),
                    torch.randn(2, 1, 10, 4, generator=torch.Generator().manual_seed(1)))
    tiers.put("a", first)
    tiers.put("b", block(10))  # a is compressed into the host tier
    assert "a" in tiers.tiers[1].lru and tiers.tiers[1].lru.stats().bytes < first.nbytes
    back = tiers.get("a")  # promoted, decompressed
    torch.testing.assert_close(back.keys, first.keys, atol=0.05, rtol=0.05)
    assert "a" in tiers.tiers[0].lru and "b" in tiers.tiers[1].lru


def test_tier_names_must_differ():
    with pytest.raises(ValueError, match="differ"):
        MemoryTiers([MemoryTier("host", ByteLRU(1)), MemoryTier("host", ByteLRU(1))])
    with pytest.raises(ValueError, match="at least one"):
        MemoryTiers([])


def test_replica_tiers_by_device():
    from blockrag.kvcache.tiers import replica_tiers

    cpu = replica_tiers("cpu", 1000, pinned_bytes=500)  # no pinned tier without a GPU
    assert [t.name for t in cpu.tiers] == ["host"] and cpu.stats().capacity_bytes == 1000
    compressed = replica_tiers("cpu", 1000, compression="int8_token")
    assert isinstance(compressed.tiers[0].lru, CompressedKVLRU)
    gpu = replica_tiers("cuda", 1000, pinned_bytes=500, compression="int8_token")  # built without touching CUDA
    assert [(t.name, type(t.lru)) for t in gpu.tiers] == [("device", CompressedKVLRU), ("pinned", ByteLRU)]
    assert [t.name for t in replica_tiers("cuda", 1000).tiers] == ["device"]
