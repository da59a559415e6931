"""ByteLRU: byte-bounded LRU order, replacement, oversize values, counters and thread safety."""

from __future__ import annotations

import threading

import pytest

from blockrag.kvcache.memory_tier import ByteLRU, TierStats


def test_get_put_and_counters() -> None:
    lru: ByteLRU[str, bytes] = ByteLRU(100)
    assert lru.get("a") is None
    lru.put("a", b"x", 10)
    assert lru.get("a") == b"x" and "a" in lru and "b" not in lru and len(lru) == 1
    assert lru.stats() == TierStats(
        entries=1, bytes=10, capacity_bytes=100, hits=1, misses=1, evictions=0
    )


def test_evicts_least_recently_used_by_bytes() -> None:
    lru: ByteLRU[str, str] = ByteLRU(100)
    for key in "abc":
        lru.put(key, key, 30)
    assert lru.get("a") == "a"  # now b is the least recently used
    lru.put("d", "d", 30)  # 120 > 100: drop b
    assert "b" not in lru and all(k in lru for k in "acd")
    lru.put("e", "e", 70)  # needs 70 free: drop c then a (d and e remain, 100 bytes)
    assert [k for k in "abcde" if k in lru] == ["d", "e"]
    assert lru.stats().bytes == 100 and lru.stats().evictions == 3


def test_contains_does_not_refresh() -> None:
    lru: ByteLRU[str, str] = ByteLRU(60)
    lru.put("a", "a", 30)
    lru.put("b", "b", 30)
    assert "a" in lru
    lru.put("c", "c", 30)
    assert "a" not in lru and "b" in lru
    assert lru.stats().hits == 0


def test_replace_updates_bytes_and_recency() -> None:
    lru: ByteLRU[str, str] = ByteLRU(100)
    lru.put("a", "old", 60)
    lru.put("b", "b", 40)
    lru.put("a", "new", 10)  # replacing is not an eviction, and refreshes a
    assert lru.get("a") == "new"
    assert lru.stats() == TierStats(2, 50, 100, 1, 0, 0)
    lru.put("c", "c", 60)  # 110 > 100: b is older than a
    assert "b" not in lru and "a" in lru


def test_oversize_value_is_not_kept_and_drops_the_old_one() -> None:
    lru: ByteLRU[str, str] = ByteLRU(50)
    lru.put("a", "small", 10)
    lru.put("a", "huge", 51)
    assert lru.get("a") is None and len(lru) == 0 and lru.stats().bytes == 0
    lru.put("b", "exact", 50)
    assert lru.get("b") == "exact"


def test_zero_capacity_keeps_only_empty_values() -> None:
    lru: ByteLRU[str, str] = ByteLRU(0)
    lru.put("a", "a", 1)
    lru.put("z", "", 0)
    assert "a" not in lru and "z" in lru


def test_pop() -> None:
    lru: ByteLRU[str, str] = ByteLRU(100)
    lru.put("a", "a", 40)
    assert lru.pop("a") == "a" and lru.pop("a") is None
    assert lru.stats() == TierStats(0, 0, 100, 0, 0, 0)


@pytest.mark.parametrize("capacity", [-1, 1.5, "10"])
def test_bad_capacity(capacity: object) -> None:
    with pytest.raises(ValueError):
        ByteLRU(capacity)  # type: ignore[arg-type]


def test_bad_nbytes() -> None:
    with pytest.raises(ValueError):
        ByteLRU(10).put("a", "a", -1)


def test_threads_keep_the_byte_bound() -> None:
    lru: ByteLRU[int, int] = ByteLRU(1000)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(2000):
                key = (i * 7 + offset) % 300
                if lru.get(key) is None:
                    lru.put(key, key, 10 + key % 20)
                if i % 50 == 0:
                    lru.pop(key)
        except BaseException as e:  # surfaced by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stats = lru.stats()
    assert stats.bytes <= 1000 and stats.hits + stats.misses == 4 * 2000
    # The byte count agrees with the entries kept.
    assert stats.bytes == sum(10 + k % 20 for k in range(300) if k in lru)


# --- the host tier under KV compression --------------------------------------------------------

import torch  # noqa: E402

from blockrag.attention.block_kv import BlockKV  # noqa: E402
from blockrag.kvcache.compression import KVCompression  # noqa: E402
from blockrag.kvcache.memory_tier import CompressedKVLRU, host_tier  # noqa: E402
from blockrag.kvcache.quantize import compress  # noqa: E402


def block(tokens: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> BlockKV:
    g = torch.Generator().manual_seed(seed)
    shape = (30, 3, tokens, 64)  # the default model's geometry: 46,080 float32 bytes per token
    return BlockKV(tuple(range(tokens)), torch.randn(shape, generator=g).to(dtype),
                   torch.randn(shape, generator=g).to(dtype))


def test_host_tier_without_compression_is_a_plain_lru() -> None:
    tier = host_tier(1 << 20)
    assert type(tier) is ByteLRU
    kv = block(4)
    tier.put("a", kv, kv.nbytes)
    assert tier.get("a") is kv and tier.stats().bytes == 4 * 46_080


@pytest.mark.parametrize(("setting", "bytes_per_token"), [
    (KVCompression.INT8_HEAD, 11_520), (KVCompression.FP8_HEAD, 11_520), (KVCompression.INT8_TOKEN, 12_240)])
def test_compressed_tier_counts_what_it_holds(setting: KVCompression, bytes_per_token: int) -> None:
    tier = host_tier(1 << 20, setting)
    assert isinstance(tier, CompressedKVLRU)
    kv = block(10)
    tier.put("a", kv, kv.nbytes)  # the caller's nbytes is the uncompressed size
    scales = 0 if setting.per_token else 2 * 90 * 4
    assert tier.stats().bytes == 10 * bytes_per_token + scales
    out = tier.get("a")
    expected = compress(kv, setting).decompress()
    assert out.token_ids == kv.token_ids and out.dtype == kv.dtype
    assert torch.equal(out.keys, expected.keys) and torch.equal(out.values, expected.values)
    assert tier.pop("a") is not None and tier.get("a") is None and tier.stats().bytes == 0


def test_compressed_tier_keeps_more_blocks_in_the_same_capacity() -> None:
    capacity = 4 * 20 * 46_080  # four 20-token blocks uncompressed
    plain, compressed = host_tier(capacity), host_tier(capacity, KVCompression.INT8_TOKEN)
    for i in range(12):
        kv = block(20, seed=i)
        plain.put(i, kv, kv.nbytes)
        compressed.put(i, kv, kv.nbytes)
    assert len(plain) == 4 and len(compressed) == 12  # 12 * 20 * 12,240 bytes fit in 3,686,400
    assert compressed.stats().evictions == 0 and plain.stats().evictions == 8


def test_compressed_tier_keeps_the_blocks_dtype() -> None:
    tier = host_tier(1 << 20, KVCompression.FP8_HEAD)
    tier.put("a", block(3, dtype=torch.bfloat16), 0)
    assert tier.get("a").dtype == torch.bfloat16


def test_compressed_tier_refuses_none_and_bad_names() -> None:
    with pytest.raises(ValueError, match="NONE"):
        CompressedKVLRU(10, KVCompression.NONE)
    with pytest.raises(ValueError, match="kv_compression must be one of"):
        host_tier(10, "int4")
