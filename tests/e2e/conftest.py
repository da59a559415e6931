"""End-to-end: the platform from `blockrag up`, reached only through gRPC stubs generated from
protos/ (blockrag.v1), as an outside client reaches it."""

from __future__ import annotations

import grpc
import pytest

from blockrag.samples import sample_documents
from blockrag.v1 import admin_pb2, admin_pb2_grpc, cache_index_pb2, cache_index_pb2_grpc, generation_pb2
from blockrag.v1 import generation_pb2_grpc
from calls import ADMIN, CACHE_INDEX, COLLECTION, GENERATION, with_key

@pytest.fixture(scope="session")
def channel(platform):
    with grpc.insecure_channel(platform.grpc) as channel:
        yield channel


@pytest.fixture(scope="session")
def generation(channel):
    return generation_pb2_grpc.GenerationServiceStub(channel)


@pytest.fixture(scope="session")
def admin_key(channel) -> str:
    """An admin API key, created over AdminService (open: this platform runs without --auth)."""
    return admin_pb2_grpc.AdminServiceStub(channel).CreateApiKey(admin_pb2.CreateApiKeyRequest(
        tenant="ops", role=admin_pb2.ROLE_ADMIN, label="e2e"), metadata=ADMIN).api_key


@pytest.fixture(scope="session")
def ingested(generation) -> generation_pb2.IngestResponse:
    """The bundled samples, ingested once into COLLECTION."""
    documents = [generation_pb2.Document(id=name, text=text) for name, text in sample_documents().items()]
    return generation.Ingest(generation_pb2.IngestRequest(collection=COLLECTION, documents=documents),
                             metadata=GENERATION)


@pytest.fixture(scope="session")
def block_texts(channel, ingested, admin_key) -> dict[str, str]:
    """block id -> text, read back from the cache index service (internal: an admin key)."""
    ids = [b for d in ingested.documents for b in d.block_ids]
    reply = cache_index_pb2_grpc.CacheIndexServiceStub(channel).GetBlocks(
        cache_index_pb2.GetBlocksRequest(block_ids=ids), metadata=with_key(CACHE_INDEX, admin_key))
    return {b.block_id: b.text for b in reply.blocks}
