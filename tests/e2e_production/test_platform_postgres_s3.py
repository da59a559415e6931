"""The platform on its production backends: PostgreSQL for the index, S3 for the KV entries
(rclone's S3 server standing in for MinIO). A second platform in the session, so marked slow:
    .venv/bin/python -m pytest -m slow tests/e2e_production
"""

from __future__ import annotations

import grpc
import pytest
from fixtures.platform import start_platform, stop_platform

from blockrag.samples import sample_documents
from blockrag.v1 import admin_pb2, admin_pb2_grpc, cache_index_pb2, cache_index_pb2_grpc, generation_pb2
from blockrag.v1 import generation_pb2_grpc

pytestmark = pytest.mark.slow
GENERATION, CACHE_INDEX, ADMIN = (("application", "generation"),), (("application", "cache_index"),), \
    (("application", "admin"),)


def test_ingest_and_ask_on_postgres_and_s3(tmp_path, postgres_url, s3_server):
    store = f"s3://blockrag-kv/kv?endpoint={s3_server.endpoint}&secure=false"
    env = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    platform = start_platform(tmp_path / "state", "--database-url", postgres_url, "--object-store-url", store,
                              env=env)
    try:
        with grpc.insecure_channel(platform.grpc) as channel:
            generation = generation_pb2_grpc.GenerationServiceStub(channel)
            name, text = next(iter(sample_documents().items()))
            ingested = generation.Ingest(generation_pb2.IngestRequest(
                collection="prod", documents=[generation_pb2.Document(id=name, text=text)]), metadata=GENERATION)
            ids = list(ingested.documents[0].block_ids)
            # the cache index is internal: from outside, an admin key (created open: no --auth here)
            key = admin_pb2_grpc.AdminServiceStub(channel).CreateApiKey(admin_pb2.CreateApiKeyRequest(
                tenant="ops", role=admin_pb2.ROLE_ADMIN), metadata=ADMIN).api_key
            found = cache_index_pb2_grpc.CacheIndexServiceStub(channel).Lookup(cache_index_pb2.LookupRequest(
                block_ids=ids, model_version=ingested.model_version),
                metadata=(*CACHE_INDEX, ("authorization", f"Bearer {key}")))
            assert all(r.hit and r.location.startswith("s3://blockrag-kv/kv/") for r in found.results)
            assert len(list((s3_server.root / "blockrag-kv" / "kv").rglob("*"))) >= len(ids)

            request = generation_pb2.GenerateRequest(question="What is this about?", max_new_tokens=4,
                                                     context=[generation_pb2.ContextBlock(block_id=b) for b in ids])
            tiers = []
            for _ in range(2):
                replies = list(generation.Generate(request, metadata=GENERATION))
                tiers.append(dict(replies[-1].usage.blocks_by_tier))
            assert tiers == [{"store": len(ids)}, {"memory": len(ids)}]
    finally:
        assert stop_platform(platform) == 0, platform.log_tail()
