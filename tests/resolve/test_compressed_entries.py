"""KV compression through the real path (BlockWriter, SQLite index, local object store, BlockResolver
as a replica holds it): entries stored compressed, served at that precision, and an entry of
another deployment setting treated as a miss, recomputed and replaced under the reader's."""

from __future__ import annotations

import asyncio

import torch

from blockrag.kvcache import KVCodec
from blockrag.kvcache.compression import KVCompression
from blockrag.kvcache.index import block_id_for
from blockrag.kvcache.memory_tier import ByteLRU, CompressedKVLRU, host_tier
from blockrag.kvcache.quantize import compress
from blockrag.resolve import AccessLog, BlockRef, BlockResolver, BlockWriter, LocalEncoder, StoreTier
from blockrag.telemetry.metrics import KV_ENTRIES_REJECTED

T = "acme"
TEXT = "The ferry to Skarvholm leaves at nine and returns at four, except on holidays."
INT8 = KVCompression.INT8_TOKEN


def replica(index, objects, compression: KVCompression, memory: ByteLRU | None = None) -> BlockResolver:
    store = StoreTier(index, objects, threads=2, access=AccessLog(index, flush_every_s=3600), compression=compression)
    writer = BlockWriter(index, objects, compression=compression)
    return BlockResolver(LocalEncoder(writer), store=store, memory=memory)


def resolve(resolver: BlockResolver, runtime, by_text: bool = False):
    ref = BlockRef.of(T, text=TEXT) if by_text else BlockRef(block_id_for(T, TEXT))
    return asyncio.run(resolver.resolve(runtime, T, [ref])).blocks[0]


def stored_frame(index, objects, runtime) -> bytes:
    (row,) = index.lookup(T, [block_id_for(T, TEXT)], runtime.version)
    return objects.get(row.location)


def foreign() -> float:
    return KV_ENTRIES_REJECTED.labels(reason="foreign")._value.get()


def test_compressed_entry_is_stored_and_served_at_its_precision(runtime, index, objects):
    BlockWriter(index, objects, compression=INT8).write(runtime, T, [TEXT])
    data = stored_frame(index, objects, runtime)
    assert KVCodec.read_header(data).compression is INT8
    exact = runtime.engine.encode_block(runtime.template.block_ids(TEXT))
    # the tiny model's heads are 8 wide: a float32 scale per token and head costs half as much as
    # its int8 values (the default model's 64-wide heads: 1/16)
    assert len(data) < len(KVCodec.encode(exact, runtime.version, tenant=T, block_id="b")) / 2

    block = resolve(replica(index, objects, INT8), runtime)
    assert block.tier == "store"
    expected = compress(exact, INT8).decompress()
    assert torch.allclose(block.kv.keys, expected.keys, atol=1e-6)
    assert not torch.equal(block.kv.keys, exact.keys)


def test_an_entry_of_another_setting_is_a_miss_and_is_replaced(runtime, index, objects):
    BlockWriter(index, objects, compression=INT8).write(runtime, T, [TEXT])
    before = foreign()

    block = resolve(replica(index, objects, KVCompression.NONE), runtime)
    assert block.tier == "computed" and foreign() == before + 1
    exact = runtime.engine.encode_block(runtime.template.block_ids(TEXT))
    assert torch.allclose(block.kv.keys, exact.keys, atol=1e-5)
    # the recompute replaced the entry under the reader's setting: a store hit for it now
    assert KVCodec.read_header(stored_frame(index, objects, runtime)).compression is KVCompression.NONE
    assert resolve(replica(index, objects, KVCompression.NONE), runtime).tier == "store"
    # and a miss again for a deployment that serves int8 (which replaces it back)
    assert resolve(replica(index, objects, INT8), runtime).tier == "computed"
    assert KVCodec.read_header(stored_frame(index, objects, runtime)).compression is INT8


def test_host_tier_holds_compressed_blocks(runtime, index, objects):
    memory = host_tier(1 << 24, INT8)
    assert isinstance(memory, CompressedKVLRU)
    resolver = replica(index, objects, INT8, memory)
    first = resolve(resolver, runtime, by_text=True)
    second = resolve(resolver, runtime)
    assert (first.tier, second.tier) == ("computed", "memory")
    held = memory.stats().bytes
    assert held == compress(first.kv, INT8).nbytes < first.kv.nbytes / 2
    assert torch.allclose(second.kv.keys, compress(first.kv, INT8).decompress().keys, atol=1e-6)
