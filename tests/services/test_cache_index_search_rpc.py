"""CacheIndexService.Search over real gRPC: the servicer behind a grpc.aio server on a loopback
port (as Ray Serve's proxy calls it: request and gRPC context), a generated stub as the client,
a SQLite index. Hits come best first with their texts; bad requests get INVALID_ARGUMENT with
a message that names the fix; a tenant never sees another's blocks. The cache index is internal:
from outside, as here, it answers an admin key only (tests/services/test_access.py)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from bearer_channel import bearer_channel

from blockrag.auth import KeyStore, Role

from blockrag.v1 import cache_index_pb2 as pb
from blockrag.v1 import cache_index_pb2_grpc as pb_grpc
from blockrag_services.cache_index.deployment import CacheIndexService

TEXTS = ["The harbour master of Tolvik signs every permit.", "Cod is salted on the eastern pier.",
         "The ferry to Skarvholm leaves at noon."]


class Servicer(pb_grpc.CacheIndexServiceServicer):
    """The deployment's methods, called with the gRPC context as the proxy calls them."""

    def __init__(self, service: CacheIndexService) -> None:
        self.service = service

    async def RegisterBlocks(self, request, context):
        return await self.service.RegisterBlocks(request, context)

    async def Search(self, request, context):
        return await self.service.Search(request, context)


async def scenario(service: CacheIndexService, calls, servicer: type = Servicer) -> None:
    server = grpc.aio.server()
    pb_grpc.add_CacheIndexServiceServicer_to_server(servicer(service), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        _, key = KeyStore(service.index.engine).create("ops", Role.ADMIN)
        async with bearer_channel(f"127.0.0.1:{port}", key.text) as channel:
            await calls(pb_grpc.CacheIndexServiceStub(channel))
    finally:
        await server.stop(None)


@pytest.fixture
def service(tmp_path) -> CacheIndexService:
    service = CacheIndexService.func_or_class({"database_url": f"sqlite:///{tmp_path}/index.db",
                                               "object_store_url": str(tmp_path / "kv")})
    yield service
    service.index.close()


def test_search_over_grpc(service: CacheIndexService) -> None:
    async def calls(stub) -> None:
        blocks = [pb.BlockText(text=t, token_count=i + 5) for i, t in enumerate(TEXTS)]
        ids = (await stub.RegisterBlocks(pb.RegisterBlocksRequest(tenant="acme", collection="port", document_id="d",
                                                                  blocks=blocks))).block_ids
        await stub.RegisterBlocks(pb.RegisterBlocksRequest(tenant="globex", collection="port", document_id="d",
                                                           blocks=blocks))
        reply = await stub.Search(pb.SearchRequest(tenant="acme", collection="port", k=2,
                                                   query="Who signs the permits in the harbour?"))
        assert [h.block_id for h in reply.hits][:1] == [ids[0]] and len(reply.hits) == 2
        assert (reply.hits[0].text, reply.hits[0].token_count) == (TEXTS[0], 5)
        assert reply.hits[0].score > reply.hits[1].score
        # globex registered the same texts: same words, other ids, never in acme's answer
        theirs = await stub.Search(pb.SearchRequest(tenant="globex", collection="port", k=3, query="permits"))
        assert len(theirs.hits) == 1 and theirs.hits[0].block_id not in ids
        assert (await stub.Search(pb.SearchRequest(tenant="acme", collection="none", k=3, query="permits"))).hits == []

        for request, message in [
            (pb.SearchRequest(collection="port", k=3, query="  "), "query is empty"),
            (pb.SearchRequest(collection="port", k=0, query="permits"), "k must be between 1 and 1000"),
            (pb.SearchRequest(collection="port", k=1001, query="permits"), "k must be between 1 and 1000"),
            (pb.SearchRequest(k=3, query="permits"), "collection must be a non-empty string"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.Search(request)
            assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
            assert message in failed.value.details()

    asyncio.run(scenario(service, calls))
