"""Cache index: the SQL catalogue of blocks and KV entries, over the object store."""

from __future__ import annotations

import asyncio

from ray import serve

from blockrag.errors import InvalidRequestError, PermissionDeniedError
from blockrag.kvcache.eviction import drop_objects
from blockrag.kvcache.index import CacheIndex
from blockrag.kvcache.object_store import open_object_store
from blockrag.v1 import cache_index_pb2 as pb
from blockrag_services.access import INTERNAL, authorizer
from blockrag_services.config import PlatformConfig
from blockrag_services.errors import unary
from blockrag_services.routing import OneApplication

SERVICE = "cache_index"


def tenant_of(request) -> str:
    return request.tenant or "default"


def stored_block(block) -> pb.StoredBlock:
    return pb.StoredBlock(block_id=block.block_id, text=block.text, token_count=block.token_count)


@serve.deployment
class CacheIndexService(OneApplication):
    application = SERVICE

    def __init__(self, args: dict | None = None):
        self.config = PlatformConfig.from_args(args)
        self.index = CacheIndex.open(self.config.database)
        self.store = open_object_store(self.config.object_store)
        self.authorizer = authorizer(self.config, self.index.engine)

    # SQL calls block: run them off the event loop so that one slow query stalls no other call

    @unary(SERVICE, pb.LookupResponse, INTERNAL)
    async def Lookup(self, request: pb.LookupRequest) -> pb.LookupResponse:
        if not request.model_version:
            raise InvalidRequestError("model_version is required: KV entries belong to one model version")
        rows = await asyncio.to_thread(self.index.lookup, tenant_of(request), list(request.block_ids),
                                       request.model_version)
        return pb.LookupResponse(results=[
            pb.LookupResult(block_id=r.block_id, hit=r.hit, location=r.location, nbytes=r.nbytes,
                            known=r.known, token_count=r.token_count) for r in rows])

    @unary(SERVICE, pb.StatsResponse, INTERNAL)
    async def Stats(self, request: pb.StatsRequest) -> pb.StatsResponse:
        s = await asyncio.to_thread(self.index.stats, request.tenant or None)
        return pb.StatsResponse(
            blocks=s.blocks, documents=s.documents, collections=s.collections, entries=s.entries, bytes=s.bytes,
            by_model_version=[pb.ModelVersionStats(model_version=v, entries=n, bytes=b)
                              for v, n, b in s.by_model_version])

    @unary(SERVICE, pb.EvictResponse, INTERNAL)
    async def Evict(self, request: pb.EvictRequest) -> pb.EvictResponse:
        evicted = await asyncio.to_thread(
            self.index.evict, tenant_of(request), list(request.block_ids), request.model_version or None,
            request.max_bytes)
        # rows first, objects after a pause for readers that had just looked them up (kvcache.eviction)
        await asyncio.to_thread(drop_objects, self.store, [e.location for e in evicted])
        return pb.EvictResponse(entries=len(evicted), bytes=sum(e.nbytes for e in evicted))

    @unary(SERVICE, pb.RegisterBlocksResponse, INTERNAL)
    async def RegisterBlocks(self, request: pb.RegisterBlocksRequest) -> pb.RegisterBlocksResponse:
        if request.documents:
            return await self._register_documents(request)
        if bool(request.collection) != bool(request.document_id):
            raise InvalidRequestError("collection and document_id go together: set both or neither")
        ids = await asyncio.to_thread(
            self.index.register_blocks, tenant_of(request), [(b.text, b.token_count) for b in request.blocks],
            request.collection or None, request.document_id or None)
        return pb.RegisterBlocksResponse(block_ids=ids)

    async def _register_documents(self, request: pb.RegisterBlocksRequest) -> pb.RegisterBlocksResponse:
        """RegisterBlocks' form for several documents of one collection (CacheIndex.register_documents)."""
        if not request.collection:
            raise InvalidRequestError("documents need their collection: set collection")
        if request.blocks or request.document_id:
            raise InvalidRequestError("give either documents, or blocks (with one document_id), not both")
        ids = await asyncio.to_thread(
            self.index.register_documents, tenant_of(request), request.collection,
            [(d.document_id, [(b.text, b.token_count) for b in d.blocks]) for d in request.documents])
        return pb.RegisterBlocksResponse(documents=[
            pb.RegisteredDocument(document_id=d.document_id, block_ids=i) for d, i in zip(request.documents, ids)])

    @unary(SERVICE, pb.GetBlocksResponse, INTERNAL)
    async def GetBlocks(self, request: pb.GetBlocksRequest) -> pb.GetBlocksResponse:
        blocks = await asyncio.to_thread(self.index.get_blocks, tenant_of(request), list(request.block_ids))
        return pb.GetBlocksResponse(blocks=[stored_block(b) if b else pb.StoredBlock() for b in blocks])

    @unary(SERVICE, pb.CommitEntriesResponse, INTERNAL)
    async def CommitEntries(self, request: pb.CommitEntriesRequest) -> pb.CommitEntriesResponse:
        # A location taken from a caller let any client point its block's entry at another tenant's
        # object (issue 14). No service calls this RPC: Precompute writes objects and commits their
        # entries in one EntryWriter, at locations the store makes. So it refuses, admin or not;
        # verifying instead would still let a caller pick among objects it should not know about.
        raise PermissionDeniedError(
            "CommitEntries takes no locations from callers: KV entries are written and committed by "
            "Precompute (call Precompute, or Ingest, for the blocks)")

    @unary(SERVICE, pb.ListCollectionResponse, INTERNAL)
    async def ListCollection(self, request: pb.ListCollectionRequest) -> pb.ListCollectionResponse:
        blocks = await asyncio.to_thread(self.index.list_collection, tenant_of(request), request.collection,
                                         request.limit or None)
        return pb.ListCollectionResponse(blocks=[stored_block(b) for b in blocks])

    @unary(SERVICE, pb.SearchResponse, INTERNAL)
    async def Search(self, request: pb.SearchRequest) -> pb.SearchResponse:
        hits = await asyncio.to_thread(self.index.search, tenant_of(request), request.collection, request.query,
                                       request.k)
        return pb.SearchResponse(hits=[pb.SearchHit(block_id=h.block_id, score=h.score, text=h.text,
                                                    token_count=h.token_count) for h in hits])

    async def ready(self) -> str:
        await asyncio.to_thread(self.index.stats, None)
        return "ok"
