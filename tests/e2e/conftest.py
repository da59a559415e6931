"""End-to-end: the platform from `blockrag up`, reached only through gRPC stubs generated from
protos/ (blockrag.v1), as an outside client reaches it."""

from __future__ import annotations

import grpc
import pytest

from blockrag.samples import sample_documents
from blockrag.v1 import cache_index_pb2, cache_index_pb2_grpc, generation_pb2, generation_pb2_grpc
from calls import CACHE_INDEX, COLLECTION, GENERATION

@pytest.fixture(scope="session")
def channel(platform):
    with grpc.insecure_channel(platform.grpc) as channel:
        yield channel


@pytest.fixture(scope="session")
def generation(channel):
    return generation_pb2_grpc.GenerationServiceStub(channel)


@pytest.fixture(scope="session")
def ingested(generation) -> generation_pb2.IngestResponse:
    """The bundled samples, ingested once into COLLECTION."""
    documents = [generation_pb2.Document(id=name, text=text) for name, text in sample_documents().items()]
    return generation.Ingest(generation_pb2.IngestRequest(collection=COLLECTION, documents=documents),
                             metadata=GENERATION)


@pytest.fixture(scope="session")
def block_texts(channel, ingested) -> dict[str, str]:
    """block id -> text, read back from the cache index service."""
    ids = [b for d in ingested.documents for b in d.block_ids]
    reply = cache_index_pb2_grpc.CacheIndexServiceStub(channel).GetBlocks(
        cache_index_pb2.GetBlocksRequest(block_ids=ids), metadata=CACHE_INDEX)
    return {b.block_id: b.text for b in reply.blocks}
