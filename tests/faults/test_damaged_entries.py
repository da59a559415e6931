"""Stored KV entries damaged on disk, as a failing disk, an operator or an attacker leaves them
(issue 14, item 6): bytes flipped, the object cut short, another block's valid object copied over
it, a directory where the object was. Each is detected at the read, recomputed, counted once in
blockrag_kv_entries_rejected_total and logged once naming the block; the recompute replaces the
entry, so the next reader gets it from the store with nothing counted or logged again. In a local
store and behind a real S3 server (rclone serving the directory the damage is done in).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch

from blockrag.kvcache.index import CacheIndex, block_id_for
from blockrag.kvcache.memory_tier import ByteLRU
from blockrag.kvcache.object_store import LocalObjectStore
from blockrag.kvcache.s3_store import S3Config, S3ObjectStore
from blockrag.kvcache.sweeper import sweep_orphans
from blockrag.resolve import AccessLog, BlockRef, BlockResolver, BlockWriter, LocalEncoder, StoreTier
from blockrag.telemetry.metrics import KV_ENTRIES_REJECTED

TENANT = "acme"
TEXTS = ["The Harbour Office of Tolvik opens at seven.", "Ada Brenn signs every permit for long boats.",
         "Fishing boats unload at the eastern pier."]
DAMAGED = 1  # the middle block's entry is damaged; its neighbours stay sound


def flip(data: bytes, other: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF  # inside the tensors: only the checksum can tell
    return bytes(damaged)


def truncate(data: bytes, other: bytes) -> bytes:
    return data[: len(data) // 2]


def swap(data: bytes, other: bytes) -> bytes:
    return other  # a sound frame, of another block


UNREADABLE = None  # a directory where the object's file was: a local store's fault only
DAMAGES = {"corrupted": (flip, "corrupt"), "truncated": (truncate, "corrupt"), "swapped": (swap, "foreign"),
           "unreadable": (UNREADABLE, "corrupt")}


@pytest.fixture
def index(tmp_path):
    index = CacheIndex.open(f"sqlite:///{tmp_path}/index.db")
    yield index
    index.close()


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalObjectStore(tmp_path / "kv")
    server = request.getfixturevalue("s3_server")
    return S3ObjectStore(S3Config(endpoint=server.endpoint, bucket=f"damaged-{secrets.token_hex(4)}",
                                  access_key=server.access_key, secret_key=server.secret_key))


def replica(index, objects) -> BlockResolver:
    store = StoreTier(index, objects, threads=2, access=AccessLog(index, flush_every_s=3600))
    return BlockResolver(LocalEncoder(BlockWriter(index, objects)), store=store, memory=ByteLRU(1 << 26))


def resolve(index, objects, runtime):
    refs = [BlockRef(block_id_for(TENANT, t)) for t in TEXTS]
    return asyncio.run(replica(index, objects).resolve(runtime, TENANT, refs))


def entry_location(index, runtime, text: str) -> str:
    (row,) = index.lookup(TENANT, [block_id_for(TENANT, text)], runtime.version)
    return row.location


def counts() -> dict[str, float]:
    return {r: KV_ENTRIES_REJECTED.labels(reason=r)._value.get() for r in ("corrupt", "foreign")}


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("blockrag")]


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_entry_is_detected_recomputed_counted_and_logged_once(damage, tiny, index, store, caplog):
    objects = store
    written = BlockWriter(index, objects).write(tiny, TENANT, TEXTS)
    resolve(index, objects, tiny)  # the opening block stored too: only the damage is left to find
    hurt, reason = DAMAGES[damage]
    target = entry_location(index, tiny, TEXTS[DAMAGED])
    if hurt is UNREADABLE:
        if not isinstance(objects, LocalObjectStore):
            pytest.skip("S3 has no directories: an unreadable object is a local store's fault")
        path = Path(urlsplit(target).path)
        path.unlink()
        path.mkdir()  # the name is there, its bytes cannot be read
    else:  # rewritten through the store, at the entry's own name: S3 serves the damaged object
        other = objects.get(entry_location(index, tiny, TEXTS[0]))
        objects.put(target.rsplit("/", 1)[-1], hurt(objects.get(target), other))
    before = counts()

    with caplog.at_level(logging.WARNING):
        mended = resolve(index, objects, tiny)
    assert [b.tier for b in mended.blocks] == ["store", "computed", "store"]
    assert mended.corrupt == 1
    for block, w in zip(mended.blocks, written):  # the recomputed KV is the block's own, not the swapped one
        assert torch.allclose(block.kv.keys, w.kv.keys, atol=1e-5) and torch.allclose(block.kv.values, w.kv.values,
                                                                                         atol=1e-5)
    assert counts() == {**before, reason: before[reason] + 1}
    logged = warnings(caplog)
    assert len(logged) == 1, logged
    assert block_id_for(TENANT, TEXTS[DAMAGED]) in logged[0] and "recomputing" in logged[0]

    # the recompute replaced the entry: read from the store by the next replica, nothing more counted
    caplog.clear()
    assert entry_location(index, tiny, TEXTS[DAMAGED]) != target
    with caplog.at_level(logging.WARNING):
        assert resolve(index, objects, tiny).tiers() == {"store": 3}
    assert counts() == {**before, reason: before[reason] + 1} and warnings(caplog) == []
    # and the damaged object is gone, or an orphan the sweeper takes
    sweep_orphans(index, objects, grace_s=0)
    assert not objects.exists(target)
    if isinstance(objects, LocalObjectStore):
        assert not Path(urlsplit(target).path).exists()  # nor a directory squatting its name
