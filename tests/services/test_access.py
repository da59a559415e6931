"""Who may call what, over real gRPC: the platform's servicers behind a grpc.aio server on a
loopback port (called as Ray Serve's proxy calls them: request and gRPC context), generated stubs
with API keys as clients, one SQLite index, a tiny random Llama. Calls between the services go
through in-process stand-ins for deployment handles, which carry no key, as inside the cluster.

Covered: a key's life (created over AdminService, used, revoked: UNAUTHENTICATED); the role
matrix (reader asks, writer ingests, admin administers; otherwise PERMISSION_DENIED); the
tenant comes from the key (a reader of one tenant never sees another's collection); the
internal services (cache index, precompute) refuse outside calls without an admin key, with
authentication on or off; every servicer method declares who may call it."""

from __future__ import annotations

import asyncio
import logging
import re
from types import SimpleNamespace

import grpc
import pytest
from bearer_channel import bearer_channel
from tiny_versions import save_tiny_llama

from blockrag.auth import KeyStore, Role
from blockrag.v1 import admin_pb2, admin_pb2_grpc, cache_index_pb2, cache_index_pb2_grpc, generation_pb2
from blockrag.v1 import generation_pb2_grpc, precompute_pb2, precompute_pb2_grpc, segmentation_pb2
from blockrag.v1 import segmentation_pb2_grpc
from blockrag_services.access import INTERNAL
from blockrag_services.admin.deployment import Admin
from blockrag_services.cache_index.deployment import CacheIndexService
from blockrag_services.errors import StatusSet
from blockrag_services.generation.deployment import Generation
from blockrag_services.handles import CACHE_INDEX, PRECOMPUTE, SEGMENTATION
from blockrag_services.precompute.deployment import Precompute
from blockrag_services.segmentation.deployment import Segmentation

UNAUTHENTICATED, DENIED = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED
ACME = "The Harbour Office of Tolvik opens at seven. Ada Brenn signs every permit for long boats."
GLOBEX = "Globex keeps its secret formula in vault nine; only Hank Scorpio holds the permit to open it."
# proto service -> (deployment class, the generated module of its stubs)
SERVICES = {
    "GenerationService": (Generation, generation_pb2_grpc),
    "AdminService": (Admin, admin_pb2_grpc),
    "CacheIndexService": (CacheIndexService, cache_index_pb2_grpc),
    "PrecomputeService": (Precompute, precompute_pb2_grpc),
    "SegmentationService": (Segmentation, segmentation_pb2_grpc),
}


class InProcess:
    """A deployment handle stand-in: handle.Method.remote(...) awaits the method, without context."""

    def __init__(self, target) -> None:
        self.target = target

    def __getattr__(self, name: str):
        method = getattr(self.target, name)
        return SimpleNamespace(remote=lambda *args: method(*args))


def servicer(name: str, deployment):
    """The proto service's servicer, each method forwarding the request and the gRPC context to
    the deployment, as the proxy does."""
    _, module = SERVICES[name]
    methods = {}
    for method in _descriptor(name).methods:
        if method.server_streaming:
            async def call(self, request, context, _name=method.name):
                try:
                    async for reply in getattr(deployment, _name)(request, context):
                        yield reply
                except StatusSet:  # the status is on the context already; Serve's proxy sends it
                    return
        else:
            async def call(self, request, context, _name=method.name):
                return await getattr(deployment, _name)(request, context)
        methods[method.name] = call
    return type(name, (getattr(module, f"{name}Servicer"),), methods)()


def _descriptor(name: str):
    from blockrag.v1 import admin_pb2 as a, cache_index_pb2 as c, generation_pb2 as g, precompute_pb2 as p
    from blockrag.v1 import segmentation_pb2 as s

    for module in (a, c, g, p, s):
        if name in module.DESCRIPTOR.services_by_name:
            return module.DESCRIPTOR.services_by_name[name]
    raise KeyError(name)


@pytest.fixture(autouse=True)
def blockrag_logger():
    """Generation and Precompute hand Serve's log handlers to the blockrag logger (replica_logs),
    which is right in a replica; here, put it back for the tests that capture its records."""
    logger = logging.getLogger("blockrag")
    handlers, level = logger.handlers[:], logger.level
    yield
    logger.handlers[:], logger.level = handlers, level


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def build(tmp_path, tiny_dir, auth: bool) -> dict:
    args = {"database_url": f"sqlite:///{tmp_path}/index.db", "object_store_url": str(tmp_path / "kv"),
            "model": {"model": str(tiny_dir), "device": "cpu"}, "resources": {"torch_threads": 1},
            "segmenter": "paragraph", "auth": auth}
    cache = CacheIndexService.func_or_class(args)
    segmentation = Segmentation.func_or_class(args)
    precompute = Precompute.func_or_class(args, handles={CACHE_INDEX: InProcess(cache)})
    handles = {CACHE_INDEX: InProcess(cache), PRECOMPUTE: InProcess(precompute), SEGMENTATION: InProcess(segmentation)}
    generation = Generation.func_or_class(args, handles=handles)
    admin = Admin.func_or_class(args, handles=handles)
    return {"GenerationService": generation, "AdminService": admin, "CacheIndexService": cache,
            "PrecomputeService": precompute, "SegmentationService": segmentation}


def serve(deployments: dict, calls) -> None:
    """Run `await calls(connect)` against a server of every service; connect(key) -> stubs."""
    async def main():
        server = grpc.aio.server()
        for name, deployment in deployments.items():
            getattr(SERVICES[name][1], f"add_{name}Servicer_to_server")(servicer(name, deployment), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channels = []

        def connect(key: str | None) -> SimpleNamespace:
            channels.append(bearer_channel(f"127.0.0.1:{port}", key))
            c = channels[-1]
            return SimpleNamespace(generation=generation_pb2_grpc.GenerationServiceStub(c),
                                   admin=admin_pb2_grpc.AdminServiceStub(c),
                                   index=cache_index_pb2_grpc.CacheIndexServiceStub(c),
                                   precompute=precompute_pb2_grpc.PrecomputeServiceStub(c),
                                   segmentation=segmentation_pb2_grpc.SegmentationServiceStub(c))
        try:
            await calls(connect)
        finally:
            for c in channels:
                await c.close()
            await server.stop(None)

    try:
        asyncio.run(main())
    finally:
        deployments["GenerationService"].models.close()
        deployments["PrecomputeService"].models.close()


async def refused(call, code: grpc.StatusCode, message: str = "") -> str:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        result = call()
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    assert failed.value.code() == code, failed.value.details()
    details = failed.value.details()
    assert message in details, details
    assert "Traceback" not in details and "internal error" not in details, details
    if code in (UNAUTHENTICATED, DENIED):  # nothing about the key or its row
        assert not re.search(r"key_[0-9a-f]{16}|brk_[0-9a-f]{16}", details), details
    return details


async def answer(stub, **request) -> generation_pb2.Usage:
    replies = [r async for r in stub.generation.Generate(generation_pb2.GenerateRequest(
        question="Who holds the permit?", max_new_tokens=2, **request))]
    return replies[-1].usage


def ingest(stub, text: str, tenant: str = ""):
    return stub.generation.Ingest(generation_pb2.IngestRequest(
        collection="handbook", tenant=tenant, documents=[generation_pb2.Document(id="d", text=text)]))


def test_keys_roles_and_tenants_with_auth_on(tmp_path, tiny_dir) -> None:
    deployments = build(tmp_path, tiny_dir, auth=True)
    store = KeyStore(deployments["AdminService"].stores.index.engine)
    _, bootstrap = store.create_first_admin("ops")  # as `blockrag keys bootstrap` does

    async def calls(connect) -> None:
        admin = connect(bootstrap.text)

        async def create(tenant: str, role: int) -> SimpleNamespace:
            reply = await admin.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(tenant=tenant, role=role))
            assert reply.key.tenant == tenant and reply.api_key.startswith("brk_")
            return connect(reply.api_key)

        acme_reader, acme_writer = await create("acme", admin_pb2.ROLE_READER), await create("acme", admin_pb2.ROLE_WRITER)
        globex_writer, globex_reader = await create("globex", admin_pb2.ROLE_WRITER), await create("globex", admin_pb2.ROLE_READER)

        # no key, a malformed one, a forged one: UNAUTHENTICATED, saying what to send
        nobody, garbage = connect(None), connect("brk_not-a-key")
        await refused(lambda: ingest(nobody, ACME), UNAUTHENTICATED, "requires an API key")
        await refused(lambda: answer(nobody, collection="handbook"), UNAUTHENTICATED, "authorization: Bearer")
        await refused(lambda: nobody.admin.ListApiKeys(admin_pb2.ListApiKeysRequest()), UNAUTHENTICATED)
        await refused(lambda: ingest(garbage, ACME), UNAUTHENTICATED, "malformed")

        # the role matrix: reader asks only, writer ingests, only admin administers
        await refused(lambda: ingest(acme_reader, ACME), DENIED, "Ingest needs the writer role; this API key has the reader role")
        acme_ids = list((await ingest(acme_writer, ACME)).documents[0].block_ids)
        globex_ids = list((await ingest(globex_writer, GLOBEX)).documents[0].block_ids)
        for stub in (acme_reader, acme_writer):
            await refused(lambda: stub.admin.ListApiKeys(admin_pb2.ListApiKeysRequest()), DENIED,
                          "needs the admin role")
            await refused(lambda: stub.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(
                tenant="acme", role=admin_pb2.ROLE_ADMIN)), DENIED, "needs the admin role")
        listed = await admin.admin.ListApiKeys(admin_pb2.ListApiKeysRequest(tenant="acme"))
        assert len(listed.keys) == 2 and {k.role for k in listed.keys} == {admin_pb2.ROLE_READER, admin_pb2.ROLE_WRITER}
        segments = await acme_reader.segmentation.Segment(segmentation_pb2.SegmentRequest(text=ACME))
        assert segments.blocks

        # the tenant is the key's: same collection name, each reader sees its own tenant's blocks
        assert list((await answer(acme_reader, collection="handbook")).block_ids) == acme_ids
        assert list((await answer(globex_reader, collection="handbook")).block_ids) == globex_ids
        await refused(lambda: answer(acme_reader, collection="handbook", tenant="globex"), DENIED,
                      "belongs to tenant 'acme' and cannot act for tenant 'globex'")
        await refused(lambda: ingest(acme_writer, ACME, tenant="globex"), DENIED, "cannot act for tenant 'globex'")
        await refused(lambda: answer(acme_reader, context=[generation_pb2.ContextBlock(block_id=globex_ids[0])]),
                      grpc.StatusCode.NOT_FOUND, "unknown block id")

        # internal services: admin only, even with auth on and a valid key of another role
        for stub in (nobody, acme_reader, acme_writer):
            await refused(lambda: stub.index.GetBlocks(cache_index_pb2.GetBlocksRequest(
                tenant="globex", block_ids=globex_ids)), DENIED)
        found = await admin.index.GetBlocks(cache_index_pb2.GetBlocksRequest(tenant="globex", block_ids=globex_ids))
        assert [b.text for b in found.blocks] == [GLOBEX]

        # revoke: the next call is refused
        revoked = await admin.admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key_id=listed.keys[0].key_id))
        assert revoked.key.revoked_at > 0
        await refused(lambda: answer(acme_reader, collection="handbook"), UNAUTHENTICATED, "unknown or revoked")
        await refused(lambda: admin.admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key_id="key_nope")),
                      grpc.StatusCode.NOT_FOUND, "unknown API key id")
        await refused(lambda: admin.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(tenant="acme")),
                      grpc.StatusCode.INVALID_ARGUMENT, "role is required")

    serve(deployments, calls)


def test_internal_services_are_internal_with_auth_off(tmp_path, tiny_dir) -> None:
    deployments = build(tmp_path, tiny_dir, auth=False)
    store = KeyStore(deployments["AdminService"].stores.index.engine)
    admin_key = store.create("ops", Role.ADMIN)[1].text
    writer_key = store.create("acme", Role.WRITER)[1].text

    async def calls(connect) -> None:
        nobody, writer, admin = connect(None), connect(writer_key), connect(admin_key)
        # public services are open: no key needed, the body names the tenant
        ids = list((await ingest(nobody, ACME, tenant="acme")).documents[0].block_ids)
        assert list((await answer(nobody, collection="handbook", tenant="acme")).block_ids) == ids
        await nobody.admin.ListApiKeys(admin_pb2.ListApiKeysRequest())
        # internal ones are not
        internal = [
            lambda s: s.index.GetBlocks(cache_index_pb2.GetBlocksRequest(tenant="acme", block_ids=ids)),
            lambda s: s.index.Search(cache_index_pb2.SearchRequest(tenant="acme", collection="handbook", query="permit", k=1)),
            lambda s: s.index.Evict(cache_index_pb2.EvictRequest(tenant="acme", max_bytes=0)),
            lambda s: s.precompute.Precompute(precompute_pb2.PrecomputeRequest(texts=["x"])),
        ]
        for call in internal:
            await refused(lambda: call(nobody), DENIED, "is internal: the platform's services call it inside the cluster")
            await refused(lambda: call(writer), DENIED, "needs the admin role")
        assert (await admin.index.GetBlocks(cache_index_pb2.GetBlocksRequest(tenant="acme", block_ids=ids))).blocks[0].text == ACME
        assert (await admin.precompute.Precompute(precompute_pb2.PrecomputeRequest(texts=[ACME], tenant="acme"))).blocks

    serve(deployments, calls)


def test_every_servicer_method_declares_its_access() -> None:
    for name, (deployment, _) in SERVICES.items():
        for method in _descriptor(name).methods:
            access = getattr(deployment.func_or_class, method.name).access
            assert access is not None, f"{name}.{method.name} declares no access"
            assert (access == INTERNAL) == (name in ("CacheIndexService", "PrecomputeService")), name


def test_auth_is_a_boolean_setting() -> None:
    from blockrag.errors import InvalidRequestError
    from blockrag_services.config import PlatformConfig

    assert PlatformConfig().auth is False and PlatformConfig.from_args({"auth": True}).auth is True
    with pytest.raises(InvalidRequestError, match="^auth: must be true or false, got 'false'$"):
        PlatformConfig.from_args({"auth": "false"})
