"""RegisterBlocks with `documents` over real gRPC (the servicer behind a grpc.aio server, a generated
stub, a SQLite index): several documents of one collection in one call, each document's ids in
request order; the single-document form unchanged; a mixed or collection-less request and a
repeated document refused with INVALID_ARGUMENT, recording nothing."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from test_cache_index_search_rpc import Servicer, scenario

from blockrag.kvcache.index import block_id_for
from blockrag.v1 import cache_index_pb2 as pb
from blockrag_services.cache_index.deployment import CacheIndexService


def blocks(*texts: str) -> list[pb.BlockText]:
    return [pb.BlockText(text=t, token_count=len(t.split())) for t in texts]


@pytest.fixture
def service(tmp_path) -> CacheIndexService:
    service = CacheIndexService.func_or_class({"database_url": f"sqlite:///{tmp_path}/index.db",
                                               "object_store_url": str(tmp_path / "kv")})
    yield service
    service.index.close()


def test_documents_in_one_call(service: CacheIndexService) -> None:
    async def calls(stub) -> None:
        reply = await stub.RegisterBlocks(pb.RegisterBlocksRequest(tenant="acme", collection="port", documents=[
            pb.DocumentBlocks(document_id="tolvik", blocks=blocks("Tolvik opens at seven.", "Ferries at nine.")),
            pb.DocumentBlocks(document_id="orsa", blocks=blocks("Orsa has no harbour."))]))
        assert list(reply.block_ids) == []
        assert [(d.document_id, list(d.block_ids)) for d in reply.documents] == [
            ("tolvik", [block_id_for("acme", "Tolvik opens at seven."), block_id_for("acme", "Ferries at nine.")]),
            ("orsa", [block_id_for("acme", "Orsa has no harbour.")])]
        # the single-document form, as before
        single = await stub.RegisterBlocks(pb.RegisterBlocksRequest(
            tenant="acme", collection="port", document_id="auna", blocks=blocks("Auna is closed.")))
        assert list(single.block_ids) == [block_id_for("acme", "Auna is closed.")] and list(single.documents) == []

        for request, message in [
            (pb.RegisterBlocksRequest(documents=[pb.DocumentBlocks(document_id="d", blocks=blocks("x"))]),
             "documents need their collection"),
            (pb.RegisterBlocksRequest(collection="port", blocks=blocks("x"),
                                      documents=[pb.DocumentBlocks(document_id="d", blocks=blocks("y"))]),
             "give either documents, or blocks"),
            (pb.RegisterBlocksRequest(collection="port", documents=[
                pb.DocumentBlocks(document_id="d", blocks=blocks("new one")),
                pb.DocumentBlocks(document_id="d", blocks=blocks("new two"))]),
             "document 'd' is given twice"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.RegisterBlocks(request)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in refused.value.details()

    asyncio.run(scenario(service, calls, Servicer))
    texts = [b.text for b in service.index.list_collection("acme", "port")]
    assert texts == ["Tolvik opens at seven.", "Ferries at nine.", "Orsa has no harbour.", "Auna is closed."]
    assert service.index.stats("default").blocks == 0  # the refused requests recorded nothing
