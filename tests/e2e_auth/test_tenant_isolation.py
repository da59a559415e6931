"""Tenant isolation (issue 14, item 8): tenant B tries, through every RPC on the port, to read,
reference, list, evict, overwrite or get a cache hit from tenant A's blocks and entries; none of
it may succeed.

The package's platform with authentication on (`blockrag up --auth`, tests/e2e_auth/conftest.py),
its keys made before it starts: the bootstrap's admin (platform-wide: AdminService requests name
tenants as scopes, so there is no per-tenant admin to attack with), A's writer and reader, B's
reader and writer. A ingests documents holding secret strings; then B makes at least
1000 attempts, seeded (random.Random), spread over every public RPC (Generate with A's collection
names, block ids, document ids and exact block texts; Ingest over A's collections and document
ids) and every internal and admin RPC (which must refuse B's keys). Per attempt: no reply or
error text holds one of A's secrets or ids that B did not send itself; a Generate's blocks are
B's own, and a block B never had is computed, never a cache hit. Afterwards A's rows are
unchanged and A's Generate still answers from its cache as before.

Runs in the default suite (the package's one platform start, then mostly refusals and lookups).
"""

from __future__ import annotations

import collections
import random
import time

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from blockrag.kvcache.index import block_id_for, open_index_engine
from blockrag.kvcache.index_schema import metadata as index_tables
from blockrag.v1 import admin_pb2, cache_index_pb2, generation_pb2, precompute_pb2, segmentation_pb2
from blockrag_services.wire import SERVICES  # application -> its service

Code = grpc.StatusCode
A, B = "acme", "globex"
SEED = 14
ATTEMPTS = 1050
CALL_TIMEOUT_S = 60.0

# A's documents: each holds a secret no other text has; the ids are A's alone too
A_DOCS = {
    "handbook": [("acme-doc-vault", "The vault code of the Tolvik harbour is ZEBRA-48213-QUILL."),
                 ("acme-doc-master", "The harbour master of Tolvik is Ada Brenn-Vorhalt.")],
    "payroll": [("acme-doc-salary", "The secret bonus pool for acme engineers is 7731-KRONA-OKAPI.")],
}
SECRETS = ["ZEBRA-48213-QUILL", "Brenn-Vorhalt", "7731-KRONA-OKAPI"]
QUESTION = "What is the vault code of the Tolvik harbour?"

# columns that record accesses (A's own Generate after the snapshot may move them), not content
ACCESS_COLUMNS = {"last_access_at", "hits"}


def call(channel, app: str, method: str, request: Message, key: str | None):
    """(status, details, replies) of one call with `key`'s bearer metadata."""
    descriptor = SERVICES[app].methods_by_name[method]
    path = f"/{descriptor.containing_service.full_name}/{method}"
    response = GetMessageClass(descriptor.output_type)
    kind = channel.unary_stream if descriptor.server_streaming else channel.unary_unary
    stub = kind(path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=response.FromString)
    metadata = (("application", app),) + ((("authorization", f"Bearer {key}"),) if key else ())
    try:
        if descriptor.server_streaming:
            return Code.OK, "", list(stub(request, metadata=metadata, timeout=CALL_TIMEOUT_S))
        return Code.OK, "", [stub(request, metadata=metadata, timeout=CALL_TIMEOUT_S)]
    except grpc.RpcError as e:
        return e.code(), e.details() or "", []


@pytest.fixture(scope="module")
def channel(auth_platform):
    with grpc.insecure_channel(auth_platform.grpc) as c:
        yield c


def snapshot(platform) -> dict[str, list]:
    """Every row of tenant A in every table that has a tenant, access counters left out."""
    engine = open_index_engine(f"sqlite:///{platform.state_dir / 'index.db'}")
    try:
        with engine.connect() as conn:
            rows = {}
            for table in index_tables.sorted_tables:
                if "tenant" not in table.c:
                    continue
                columns = [c for c in table.c if c.name not in ACCESS_COLUMNS]
                rows[table.name] = sorted(map(tuple, conn.execute(
                    sa.select(*columns).where(table.c.tenant == A)).all()), key=repr)
            return rows
    finally:
        engine.dispose()


def ask_a(channel, key: str) -> tuple[str, generation_pb2.Usage]:
    code, details, replies = call(channel, "generation", "Generate", generation_pb2.GenerateRequest(
        question=QUESTION, collection="handbook", max_new_tokens=24, top_k=1), key)
    assert code == Code.OK, details
    return "".join(r.text for r in replies), replies[-1].usage


class Attacker:
    """B's attempts and what B learnt from its own replies."""

    def __init__(self, channel, keys: dict[str, str], a_ids: set[str], a_texts: list[str], version: str):
        self.channel, self.keys, self.version = channel, keys, version
        self.a_ids, self.a_texts = a_ids, a_texts
        self.rng = random.Random(SEED)
        self.counts: collections.Counter[str] = collections.Counter()
        self.codes: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.b_ids: set[str] = set()  # ids B got in its own replies
        self.b_cached: set[str] = set()  # B's blocks whose KV B has had computed (a later hit is B's own)
        self.ok = 0
        self.seconds: collections.Counter[str] = collections.Counter()

    # ---- what B throws at A ----------------------------------------------------------------

    def key(self, roles=("b_reader", "b_writer")) -> str:
        return self.keys[self.rng.choice(roles)]

    def tenant(self) -> str:
        return self.rng.choice(["", A, A, "ACME", f"{A} ", "default", B])

    def ids(self) -> list[str]:
        pool = sorted(self.a_ids) + ["acme-doc-vault", "blk_" + "0" * 32] + sorted(self.b_ids)[:3]
        return self.rng.sample(pool, self.rng.randint(1, 3))

    def text(self) -> str:
        text = self.rng.choice(self.a_texts + SECRETS)
        return self.rng.choice([text, f"  {text}\n", text])

    def collection(self) -> str:
        return self.rng.choice(["handbook", "payroll", "handbook", "Handbook", "payroll "])

    # ---- the attempts ----------------------------------------------------------------------

    def attempt(self) -> None:
        kind = self.rng.choices(["generate", "ingest", "cache_index", "precompute", "admin", "segment"],
                                weights=[18, 8, 38, 6, 28, 2])[0]
        getattr(self, kind)()

    def generate(self) -> None:
        how = self.rng.choice(["collection", "collection", "block_id", "text", "text", "mixed"])
        request = generation_pb2.GenerateRequest(question=self.rng.choice([QUESTION, "Who is the harbour master?"]),
                                                 max_new_tokens=1, tenant=self.rng.choice(["", "", "", A, "ACME"]))
        if how == "collection":
            request.collection = self.collection()
            request.top_k = self.rng.randint(0, 3)
        elif how == "block_id":
            request.context.extend(generation_pb2.ContextBlock(block_id=i) for i in self.ids())
        elif how == "text":
            request.context.extend(generation_pb2.ContextBlock(text=self.text()) for _ in range(self.rng.randint(1, 2)))
        else:
            request.context.extend([generation_pb2.ContextBlock(text=self.text()),
                                    generation_pb2.ContextBlock(block_id=self.rng.choice(self.ids()))])
        code, _, replies = self.send("generation", "Generate", request, self.key())
        if code != Code.OK:
            return
        usage = replies[-1].usage
        got = list(usage.block_ids)
        assert not set(got) & self.a_ids, f"B's Generate used A's blocks: {got}"
        if request.context:
            wanted = [block_id_for(B, c.text.strip()) if c.text else c.block_id for c in request.context]
            assert got == wanted, f"B's Generate answered over blocks {got}, not the ones it named {wanted}"
        assert set(got) <= self.b_ids | {block_id_for(B, c.text.strip()) for c in request.context if c.text}, got
        # a block B never had computed cannot come from a cache: it would be someone else's KV
        known = sum(b in self.b_cached for b in got)
        cached = sum(n for tier, n in usage.blocks_by_tier.items() if tier != "computed")
        assert cached <= known, f"B got {cached} cached blocks of which only {known} were its own: {usage}"
        self.b_ids.update(got)
        self.b_cached.update(got)

    def ingest(self) -> None:
        docs = [generation_pb2.Document(id=self.rng.choice(["acme-doc-vault", "acme-doc-master", "acme-doc-salary"]),
                                        text=self.text())]
        request = generation_pb2.IngestRequest(collection=self.collection(), documents=docs, tenant=self.tenant())
        code, _, replies = self.send("generation", "Ingest", request, self.key())
        if code == Code.OK:
            for document in replies[0].documents:
                assert not set(document.block_ids) & self.a_ids, f"B's Ingest answered A's blocks: {document}"
                self.b_ids.update(document.block_ids)
                self.b_cached.update(document.block_ids)

    def cache_index(self) -> None:
        method = self.rng.choice(list(SERVICES["cache_index"].methods_by_name))
        tenant, ids = self.tenant(), self.ids()
        request = {
            "Lookup": lambda: cache_index_pb2.LookupRequest(block_ids=ids, model_version=self.version, tenant=tenant),
            "Stats": lambda: cache_index_pb2.StatsRequest(tenant=tenant),
            "Evict": lambda: self.rng.choice([
                cache_index_pb2.EvictRequest(tenant=tenant, block_ids=ids),
                cache_index_pb2.EvictRequest(tenant=tenant, model_version=self.version),
                cache_index_pb2.EvictRequest(tenant=tenant, max_bytes=1)]),
            "RegisterBlocks": lambda: cache_index_pb2.RegisterBlocksRequest(
                tenant=tenant, collection=self.collection(), document_id="acme-doc-vault",
                blocks=[cache_index_pb2.BlockText(text="overwritten by globex", token_count=4)]),
            "GetBlocks": lambda: cache_index_pb2.GetBlocksRequest(tenant=tenant, block_ids=ids),
            "CommitEntries": lambda: cache_index_pb2.CommitEntriesRequest(tenant=tenant, entries=[
                cache_index_pb2.KVEntry(block_id=i, model_version=self.version, location=f"x/{i}", nbytes=1)
                for i in ids]),
            "ListCollection": lambda: cache_index_pb2.ListCollectionRequest(
                tenant=tenant, collection=self.collection(), limit=self.rng.randint(0, 5)),
            "Search": lambda: cache_index_pb2.SearchRequest(tenant=tenant, collection=self.collection(),
                                                            query=self.rng.choice(["vault code", "harbour", "bonus"]),
                                                            k=self.rng.randint(1, 5)),
        }[method]()
        self.refused("cache_index", method, request)

    def precompute(self) -> None:
        request = precompute_pb2.PrecomputeRequest(texts=[self.text()], tenant=self.tenant(),
                                                   return_kv=self.rng.random() < 0.5,
                                                   model_version=self.rng.choice(["", self.version]))
        self.refused("precompute", "Precompute", request)

    def admin(self) -> None:
        method = self.rng.choice(list(SERVICES["admin"].methods_by_name))
        scope = self.rng.choice([A, "", B])
        request = {
            "Health": lambda: admin_pb2.HealthRequest(),
            "ListModelVersions": lambda: admin_pb2.ListModelVersionsRequest(),
            "CacheStats": lambda: admin_pb2.CacheStatsRequest(tenant=scope),
            "SweepCache": lambda: admin_pb2.SweepCacheRequest(grace_s=0, dry_run=self.rng.random() < 0.5),
            "EvictCache": lambda: admin_pb2.EvictCacheRequest(tenant=scope, ttl_s=self.rng.choice([0.0, 1.0]),
                                                              tenant_bounds=admin_pb2.Watermarks(high_bytes=1)),
            "StartDistillation": lambda: admin_pb2.StartDistillationRequest(tenant=scope, collection="handbook",
                                                                            steps=1),
            "GetDistillation": lambda: admin_pb2.GetDistillationRequest(run_id="run_0"),
            "ListDistillations": lambda: admin_pb2.ListDistillationsRequest(tenant=scope),
            "CancelDistillation": lambda: admin_pb2.CancelDistillationRequest(run_id="run_0"),
            "WatchDistillation": lambda: admin_pb2.WatchDistillationRequest(run_id="run_0"),
            "PromoteModelVersion": lambda: admin_pb2.PromoteModelVersionRequest(version=self.version, tenant=scope),
            "RollbackModelVersion": lambda: admin_pb2.RollbackModelVersionRequest(tenant=scope),
            "CreateApiKey": lambda: admin_pb2.CreateApiKeyRequest(tenant=A, role=self.rng.choice(
                [admin_pb2.ROLE_READER, admin_pb2.ROLE_ADMIN])),
            "ListApiKeys": lambda: admin_pb2.ListApiKeysRequest(tenant=scope),
            "RevokeApiKey": lambda: admin_pb2.RevokeApiKeyRequest(key_id="key_" + self.keys["a_reader"].split("_")[1]),
        }[method]()
        self.refused("admin", method, request)

    def segment(self) -> None:
        self.send("segmentation", "Segment", segmentation_pb2.SegmentRequest(text=self.text()), self.key())

    # ---- the checks every attempt keeps -----------------------------------------------------

    def refused(self, app: str, method: str, request: Message) -> None:
        code, details, _ = self.send(app, method, request, self.key())
        assert code == Code.PERMISSION_DENIED, f"B's {method} was not refused: {code.name} {details!r}"

    def send(self, app: str, method: str, request: Message, key: str):
        began = time.perf_counter()
        code, details, replies = call(self.channel, app, method, request, key)
        self.seconds[method] += time.perf_counter() - began
        self.counts[method] += 1
        self.codes[method][code.name] += 1
        self.ok += code == Code.OK
        assert code not in {Code.UNKNOWN, Code.INTERNAL, Code.UNAVAILABLE}, f"{method}: {code.name} {details!r}"
        sent = str(request)
        answer = details + "".join(str(r) for r in replies)
        for secret in [*SECRETS, *self.a_ids, *self.a_texts]:
            if secret not in sent:
                assert secret not in answer, f"B's {method} got A's {secret!r}: {code.name} {answer[:500]!r}"
        return code, details, replies


def test_tenant_b_cannot_reach_tenant_a(auth_platform, channel):
    platform = auth_platform
    started = time.monotonic()
    print(f"platform up in {started - platform.started:.1f} s")
    keys = platform.keys
    a_ids, a_texts = set(), []
    for collection, docs in A_DOCS.items():
        code, details, replies = call(channel, "generation", "Ingest", generation_pb2.IngestRequest(
            collection=collection, documents=[generation_pb2.Document(id=i, text=t) for i, t in docs]),
            keys["a_writer"])
        assert code == Code.OK, details
        for document in replies[0].documents:
            a_ids.add(document.document_id)
            a_ids.update(document.block_ids)
    code, details, replies = call(channel, "cache_index", "GetBlocks", cache_index_pb2.GetBlocksRequest(
        tenant=A, block_ids=sorted(i for i in a_ids if i.startswith("blk_"))), keys["admin"])
    assert code == Code.OK, details
    a_texts = [b.text for b in replies[0].blocks]
    assert all(any(secret in t for t in a_texts) for secret in SECRETS), a_texts

    answer, usage = ask_a(channel, keys["a_reader"])  # A's KV is in the caches now
    assert "computed" not in usage.blocks_by_tier, usage
    version = usage.model_version
    print(f"A's answer: {answer!r}")
    assert "ZEBRA-48213" in answer, answer  # the secret, from its cached block
    before = snapshot(platform)
    assert before["kv_entries"] and before["blocks"] and before["documents"], before

    attacker = Attacker(channel, keys, a_ids, a_texts, version)
    for text in a_texts:  # first contact: B's exact copy of each of A's blocks is computed, not a hit
        code, details, replies = attacker.send("generation", "Generate", generation_pb2.GenerateRequest(
            question=QUESTION, max_new_tokens=1, context=[generation_pb2.ContextBlock(text=text)]), keys["b_reader"])
        assert code == Code.OK, details
        assert dict(replies[-1].usage.blocks_by_tier) == {"computed": 1}, replies[-1].usage
        assert list(replies[-1].usage.block_ids) == [block_id_for(B, text)] != [block_id_for(A, text)]
        attacker.b_ids.add(block_id_for(B, text))
        attacker.b_cached.add(block_id_for(B, text))
    for _ in range(ATTEMPTS):
        attacker.attempt()
    ran = time.monotonic() - started
    print(f"\n{sum(attacker.counts.values())} attempts by tenant {B} in {ran:.1f} s, {attacker.ok} answered OK")
    for method, n in sorted(attacker.counts.items()):
        print(f"  {method:22} {n:4} {attacker.seconds[method]:6.1f} s  {dict(sorted(attacker.codes[method].items()))}")

    assert sum(attacker.counts.values()) >= 1000
    every = {m for service in SERVICES.values() for m in service.methods_by_name}
    assert every <= set(attacker.counts), sorted(every - set(attacker.counts))
    # the attempts reached past the door too: B's own answers over A's texts and A's names
    assert attacker.codes["Generate"]["OK"] >= 30 and attacker.codes["Ingest"]["OK"] >= 5, dict(attacker.codes)
    assert attacker.codes["Generate"]["NOT_FOUND"] >= 20, dict(attacker.codes)

    assert snapshot(platform) == before, "tenant B's attempts changed tenant A's rows"
    again, usage = ask_a(channel, keys["a_reader"])
    assert "computed" not in usage.blocks_by_tier and usage.cached_tokens > 0, usage
    assert again == answer, (answer, again)
