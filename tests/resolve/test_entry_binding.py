"""Entries bound to what they hold: a stored frame names its tenant, block and model version, and a
read of any other refuses it, counts it and recomputes (issue 14, item 3).

The tester's exploit, through the real path (BlockWriter, SQLite index, local object store,
BlockResolver as a generation replica holds it): tenant B points its own block's entry at tenant
A's object, as CommitEntries let any client do, and asks. Before entries were bound, B's answer
was built on A's secret KV."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import safetensors.torch
import torch

from blockrag.kvcache import KVCodec
from blockrag.kvcache.codec import MAGIC
from blockrag.kvcache.index import KVEntry, block_id_for
from blockrag.kvcache.memory_tier import ByteLRU
from blockrag.resolve import AccessLog, BlockRef, BlockResolver, BlockWriter, LocalEncoder, StoreTier
from blockrag.telemetry.metrics import KV_ENTRIES_REJECTED

A, B = "acme", "globex"
SECRET = "Acme's merger with Initech closes on the ninth of March."
MINE = "Globex ships its new turbines in the spring."
OTHER = "Acme's harbour office opens at seven."


def replica(index, objects) -> BlockResolver:
    """A fresh generation replica: its own (empty) memory tier, the shared index and store."""
    store = StoreTier(index, objects, threads=2, access=AccessLog(index, flush_every_s=3600))
    return BlockResolver(LocalEncoder(BlockWriter(index, objects)), store=store, memory=ByteLRU(1 << 26))


def resolve(index, objects, runtime, tenant: str, text: str):
    refs = [BlockRef(block_id_for(tenant, text))]  # by id, as a Generate over ingested blocks asks
    return asyncio.run(replica(index, objects).resolve(runtime, tenant, refs)).blocks[0]


def rejected(reason: str) -> float:
    return KV_ENTRIES_REJECTED.labels(reason=reason)._value.get()


def encoded(runtime, text: str):
    return runtime.engine.encode_block(runtime.template.block_ids(text))


def close(a, b) -> bool:
    return a.token_ids == b.token_ids and torch.allclose(a.keys, b.keys, atol=1e-5)


def location(index, tenant: str, text: str, version: str) -> str:
    (row,) = index.lookup(tenant, [block_id_for(tenant, text)], version)
    assert row.hit
    return row.location


def test_an_entry_pointed_at_another_tenants_object_is_refused_and_recomputed(runtime, index, objects, caplog):
    writer = BlockWriter(index, objects)
    writer.write(runtime, A, [SECRET])
    writer.write(runtime, B, [MINE])
    secret_at = location(index, A, SECRET, runtime.version)
    # the exploit: B's row names A's object (CommitEntries took any location)
    index.commit_entries(B, [KVEntry(block_id_for(B, MINE), runtime.version, secret_at, 1)])
    foreign = rejected("foreign")

    with caplog.at_level(logging.WARNING, logger="blockrag.resolve"):
        block = resolve(index, objects, runtime, B, MINE)
    assert block.tier == "computed" and close(block.kv, encoded(runtime, MINE))
    assert not close(block.kv, encoded(runtime, SECRET))
    assert rejected("foreign") == foreign + 1
    assert any("not served" in r.getMessage() and block_id_for(B, MINE) in r.getMessage() for r in caplog.records)

    # the recompute replaced B's row with B's own object, and left A's object (A's live entry) alone
    assert location(index, B, MINE, runtime.version) != secret_at
    assert resolve(index, objects, runtime, B, MINE).tier == "store"
    again = resolve(index, objects, runtime, A, SECRET)
    assert again.tier == "store" and close(again.kv, encoded(runtime, SECRET))


def test_another_blocks_object_copied_over_an_entry_is_refused(runtime, index, objects):
    """The swap: a valid entry of the same tenant's other block, copied over this block's object."""
    BlockWriter(index, objects).write(runtime, A, [SECRET, OTHER])
    target = Path(urlsplit(location(index, A, SECRET, runtime.version)).path)
    shutil.copyfile(urlsplit(location(index, A, OTHER, runtime.version)).path, target)
    foreign = rejected("foreign")
    block = resolve(index, objects, runtime, A, SECRET)
    assert block.tier == "computed" and close(block.kv, encoded(runtime, SECRET))
    assert rejected("foreign") == foreign + 1


def test_an_entry_of_another_model_version_is_refused(runtime, other_runtime, index, objects):
    BlockWriter(index, objects).write(runtime, A, [SECRET])
    BlockWriter(index, objects).write(other_runtime, A, [SECRET])
    other_at = location(index, A, SECRET, other_runtime.version)
    index.commit_entries(A, [KVEntry(block_id_for(A, SECRET), runtime.version, other_at, 1)])
    foreign = rejected("foreign")
    block = resolve(index, objects, runtime, A, SECRET)
    assert block.tier == "computed" and close(block.kv, encoded(runtime, SECRET))
    assert rejected("foreign") == foreign + 1


def test_a_version_1_entry_written_before_binding_is_recomputed_as_corrupt(runtime, index, objects):
    BlockWriter(index, objects).write(runtime, A, [SECRET])
    path = Path(urlsplit(location(index, A, SECRET, runtime.version)).path)
    path.write_bytes(_as_version_1(path.read_bytes()))
    corrupt = rejected("corrupt")
    block = resolve(index, objects, runtime, A, SECRET)
    assert block.tier == "computed" and rejected("corrupt") == corrupt + 1
    assert KVCodec.read_header(objects.get(location(index, A, SECRET, runtime.version))).format_version == 2


def _as_version_1(frame: bytes) -> bytes:
    """The same KV as a version 1 frame would hold it: no tenant or block in the metadata."""
    import hashlib

    header = KVCodec.read_header(frame)
    payload = frame[len(MAGIC) + 1 + 32:]
    tensors = safetensors.torch.load(payload)
    meta = {"format_version": "1", "model_fingerprint": header.model_fingerprint, "dtype": header.dtype,
            "num_layers": str(header.num_layers), "num_kv_heads": str(header.num_kv_heads),
            "head_dim": str(header.head_dim), "num_tokens": str(header.num_tokens),
            "token_ids_sha256": header.token_ids_sha256}
    blob = safetensors.torch.save(tensors, metadata=meta)
    return MAGIC + bytes((1,)) + hashlib.sha256(blob).digest() + blob
