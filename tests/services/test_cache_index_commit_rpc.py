"""CacheIndexService.CommitEntries over real gRPC (the servicer behind a grpc.aio server, an
admin key, a SQLite index): it takes no locations from callers (issue 14, item 3). A client once
pointed its block's entry at another tenant's object this way and got that tenant's KV served;
now the call is refused, even with an admin key, and no row is written."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from test_cache_index_search_rpc import scenario, service  # noqa: F401  (the fixture, shared)

from blockrag.v1 import cache_index_pb2 as pb
from blockrag.v1 import cache_index_pb2_grpc as pb_grpc


class Servicer(pb_grpc.CacheIndexServiceServicer):
    def __init__(self, deployment) -> None:
        self.service = deployment

    async def RegisterBlocks(self, request, context):
        return await self.service.RegisterBlocks(request, context)

    async def CommitEntries(self, request, context):
        return await self.service.CommitEntries(request, context)

    async def Lookup(self, request, context):
        return await self.service.Lookup(request, context)


def test_commit_entries_refuses_client_locations(service) -> None:  # noqa: F811

    async def calls(stub) -> None:
        (block_id,) = (await stub.RegisterBlocks(pb.RegisterBlocksRequest(
            tenant="globex", blocks=[pb.BlockText(text="Globex ships turbines.", token_count=4)]))).block_ids
        planted = pb.KVEntry(block_id=block_id, model_version="m1", nbytes=10,
                             location=service.store.location_for("0" * 64 + ".0123456789abcdef"))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CommitEntries(pb.CommitEntriesRequest(tenant="globex", entries=[planted]))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "Precompute" in refused.value.details() and "file:" not in refused.value.details()
        (row,) = (await stub.Lookup(pb.LookupRequest(tenant="globex", block_ids=[block_id],
                                                     model_version="m1"))).results
        assert row.known and not row.hit and row.location == ""

    asyncio.run(scenario(service, calls, Servicer))
