"""The resolver on the production backends: a PostgreSQL index and an S3 bucket (rclone's server):
a miss is encoded once and stored; another replica fetches every entry from the bucket, with its
hits in the index only after the access log flushes."""

from __future__ import annotations

import asyncio
import secrets

import torch
from fixtures.postgres import fresh_database

from blockrag.kvcache.index import CacheIndex, block_id_for
from blockrag.kvcache.memory_tier import ByteLRU
from blockrag.kvcache.s3_store import S3Config, S3ObjectStore
from blockrag.resolve import AccessLog, BlockRef, BlockResolver, BlockWriter, LocalEncoder, StoreTier

TEXTS = [f"Harbour {i}: the office of pier {i} opens at {6 + i} in the morning." for i in range(8)]


def test_postgres_index_and_s3_store(runtime, s3_server):
    bucket = S3ObjectStore(S3Config(endpoint=s3_server.endpoint, bucket=f"blockrag-{secrets.token_hex(4)}",
                                    access_key=s3_server.access_key, secret_key=s3_server.secret_key))
    refs = [BlockRef.of("acme", text=t) for t in TEXTS]
    with fresh_database() as url:
        index = CacheIndex.open(url)
        try:
            def replica():
                store = StoreTier(index, bucket, threads=8, access=AccessLog(index, flush_every_s=3600))
                return BlockResolver(LocalEncoder(BlockWriter(index, bucket)), store=store, memory=ByteLRU(1 << 26))

            cold = asyncio.run(replica().resolve(runtime, "acme", refs))
            reader = replica()
            warm = asyncio.run(reader.resolve(runtime, "acme", refs))
            assert cold.tiers() == {"computed": 8} and warm.tiers() == {"store": 8}
            assert warm.prefix.tier == "store"
            assert all(torch.equal(a.kv.keys, b.kv.keys) for a, b in zip(cold.blocks, warm.blocks))
            ids = [block_id_for("acme", t) for t in TEXTS]
            with index.engine.begin() as conn:
                assert set(conn.exec_driver_sql("SELECT hits FROM kv_entries").scalars()) == {0}
            assert reader.store.access.flush() == 8
            with index.engine.begin() as conn:
                assert dict(conn.exec_driver_sql("SELECT block_id, hits FROM kv_entries").fetchall()) == \
                    dict.fromkeys(ids, 1)
        finally:
            index.close()
