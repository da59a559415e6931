"""Fuzzing every public RPC of a running platform (issue 14, items 5 and 7).

One platform for the module, started as a user starts it (`blockrag up`, tests/fixtures/platform.py),
reached only over gRPC with identity serializers, so that what goes on the wire is exactly what
the test chose. For every RPC on the port (the five services, the internal two with an admin
key, and grpc.health.v1):

- well-typed random messages (proto_strategies: every field unset or a random value of its type,
  bounded sizes; the cost of the few expensive fields bounded by OVERRIDES),
- random bytes and mutated valid messages as the request body,
- random metadata (application, authorization, other keys) around an empty request.

Every answer must be a status from ALLOWED (never UNKNOWN, INTERNAL or UNAVAILABLE: each request
here is the client's own error or a success); bytes that do not parse as the request type
INVALID_ARGUMENT; a request with a NaN anywhere is never accepted; details never hold a stack
trace, a file path, a pid or an internal id (unless the caller sent that text itself). At the
end: the services still answer a health check and a valid Ingest and Generate, and nothing is
half-written (a failed Ingest left no collection, every stored object is named by an index row,
no write intent is left open, every row's object exists).

Reproducible: hypothesis runs derandomized, without an example database. Left out: server
reflection, which Ray Serve's proxy registers itself (it answers bytes that do not parse with
UNKNOWN), and Health.Watch, a stream that never ends (only its refusal of bytes that do not
parse is checked).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

import grpc
import pytest
import sqlalchemy as sa
from fixtures.platform import start_platform, stop_platform
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proto_strategies import floats, messages, strings_of, texts

from blockrag.errors import InvalidRequestError
from blockrag.kvcache.index import CacheIndex
from blockrag.kvcache.object_store import LocalObjectStore
from blockrag.kvcache.sweeper import sweep_orphans
from blockrag.v1 import admin_pb2, cache_index_pb2, generation_pb2, precompute_pb2, segmentation_pb2
from blockrag_services.wire import SERVICES

Code = grpc.StatusCode
# What a client may get for a request of its own making: a success or a refusal it can act on.
ALLOWED = frozenset({Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.PERMISSION_DENIED, Code.UNAUTHENTICATED,
                     Code.RESOURCE_EXHAUSTED, Code.FAILED_PRECONDITION, Code.OUT_OF_RANGE, Code.ALREADY_EXISTS})
# what a message to a client must never show: a trace, a source file or path, a process, an object address
LEAKS = re.compile(r"Traceback|File \"|\.py\b|/work\b|/tmp/|/home/|/root\b|site-packages|\bpid\b|actor_id|"
                   r"ray::|0x[0-9a-f]{6,}|internal error \(id")
CALL_TIMEOUT_S = 60.0

# application (the `application` metadata) -> its service; health is answered by the proxy itself
# (in this order: data plane first, administration last)
APPLICATIONS = {app: SERVICES[app] for app in ("segmentation", "generation", "precompute", "cache_index", "admin")}
INTERNAL_APPS = {"precompute", "cache_index"}  # an admin key from outside
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].methods_by_name["Check"]


@dataclass(frozen=True)
class Rpc:
    app: str | None  # None: the proxy's own (health)
    method: object  # MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def request_type(self) -> type[Message]:
        return GetMessageClass(self.method.input_type)

    def __str__(self) -> str:
        return f"{self.method.containing_service.name}.{self.method.name}"


# data plane first, destructive administration last; the checks at the end follow them all
RPCS = [Rpc(app, m) for app, service in APPLICATIONS.items() for m in service.methods] + [Rpc(None, HEALTH)]


# bounds on what costs: tokens generated (a valid max_new_tokens is 1 or 2, the others are refused),
# and the sweep (a real one would delete the half-written objects the last test looks for)
OVERRIDES = {
    "GenerateRequest.max_new_tokens": st.one_of(st.integers(1, 2), st.integers(1025, 2**31 - 1),
                                                st.integers(-2**31, -1)),
    "GenerateRequest.temperature": floats(32),
    "SweepCacheRequest.dry_run": st.just(True),
    # a collection no test ingests: a run is refused (NOT_FOUND) before any training starts
    "StartDistillationRequest.collection": texts().map(lambda s: f"fuzz-missing-{s}"),
}
COLLECTIONS = st.sampled_from(["fz-a", "fz-b"])
TENANTS = st.one_of(st.sampled_from(["", "acme"]), texts())
WORDS = st.one_of(texts().filter(str.strip), st.sampled_from([
    "The harbour office opens at seven.", "Ada Brenn signs every permit for long boats.", "Who signs the permits?"]))


def _documents(texts_: list[str]) -> list:
    return [generation_pb2.Document(id=f"d{i}", text=t) for i, t in enumerate(texts_)]


# a good document, then ones with ids that pass the service's own check (non-blank, unique) and may
# still be refused further on: a refused one must not leave the first behind
IDS = st.one_of(st.sampled_from(["d0", "d1", "d2"]), st.sampled_from(["a\x00b", "x" * 256, "é" * 256]),
                texts().filter(str.strip))
DOCUMENTS = st.lists(st.tuples(IDS.filter(lambda i: i != "d0"), WORDS), min_size=1, max_size=2,
                     unique_by=lambda d: d[0]).map(
    lambda docs: [generation_pb2.Document(id=i, text=t) for i, t in [("d0", "The first document."), *docs]])


# requests that pass the services' checks (mostly), so that the fuzzing reaches past them: each is
# sent as is, or with one field replaced by a random value of its type (or cleared)
VALID = {
    "Segment": st.builds(segmentation_pb2.SegmentRequest, text=WORDS),
    "Ingest": st.one_of(
        st.builds(generation_pb2.IngestRequest, collection=COLLECTIONS, tenant=st.sampled_from(["", "acme"]),
                  documents=st.lists(WORDS, min_size=1, max_size=3).map(_documents)),
        st.builds(generation_pb2.IngestRequest, collection=st.integers(0, 10**9).map(lambda n: f"fz-{n}"),
                  tenant=st.sampled_from(["", "acme"]), documents=DOCUMENTS)),  # a collection of its own
    "Generate": st.one_of(
        st.builds(generation_pb2.GenerateRequest, question=WORDS, collection=COLLECTIONS, max_new_tokens=st.just(1),
                  tenant=st.sampled_from(["", "acme"]), top_k=st.integers(0, 3)),
        st.builds(generation_pb2.GenerateRequest, question=WORDS, max_new_tokens=st.integers(1, 2),
                  temperature=st.floats(0, 2), seed=st.integers(-2**63, 2**63 - 1),
                  context=st.lists(WORDS.map(lambda t: generation_pb2.ContextBlock(text=t)), min_size=1, max_size=3))),
    "Precompute": st.builds(precompute_pb2.PrecomputeRequest, texts=st.lists(WORDS, min_size=1, max_size=3),
                            tenant=TENANTS, return_kv=st.booleans()),
    "RegisterBlocks": st.builds(cache_index_pb2.RegisterBlocksRequest, tenant=TENANTS, collection=COLLECTIONS,
                                document_id=st.sampled_from(["r0", "r1"]), blocks=st.lists(st.builds(
                                    cache_index_pb2.BlockText, text=WORDS, token_count=st.integers(1, 64)),
                                    min_size=1, max_size=3)),
    "Search": st.builds(cache_index_pb2.SearchRequest, tenant=TENANTS, collection=COLLECTIONS, query=WORDS,
                        k=st.integers(1, 8)),
    "ListCollection": st.builds(cache_index_pb2.ListCollectionRequest, tenant=TENANTS, collection=COLLECTIONS,
                                limit=st.integers(0, 8)),
    "CreateApiKey": st.builds(admin_pb2.CreateApiKeyRequest, tenant=WORDS, label=texts(),
                              role=st.sampled_from([admin_pb2.ROLE_READER, admin_pb2.ROLE_WRITER, admin_pb2.ROLE_ADMIN])),
}


def requests_for(rpc: Rpc) -> st.SearchStrategy[Message]:
    """Random messages of the RPC's request type, and valid ones with one field changed."""
    descriptor = rpc.method.input_type
    random = messages(descriptor, OVERRIDES)
    if rpc.method.name not in VALID:
        return random.map(_no_training)

    def mutate(valid: Message, other: Message, name: str) -> Message:
        field = descriptor.fields_by_name[name]
        valid.ClearField(name)
        if field.is_repeated or field.message_type is not None:
            getattr(valid, name).MergeFrom(getattr(other, name))
        elif not field.has_presence or other.HasField(name):
            setattr(valid, name, getattr(other, name))
        return valid

    names = st.sampled_from([f.name for f in descriptor.fields])
    valid = VALID[rpc.method.name]
    return st.one_of(valid, st.builds(mutate, valid, random, names), random).map(_no_training)


def _no_training(request: Message) -> Message:
    """StartDistillation always names a collection that is not there: no run ever trains here
    (without one, a run would train on the default corpus)."""
    if isinstance(request, admin_pb2.StartDistillationRequest) and not request.collection:
        request.collection = "fuzz-missing"
    return request


def untrained(rpc: Rpc, body: bytes) -> bytes:
    """`body`, or for a StartDistillation request that parses without a collection, the same bytes
    plus one (the last value of a field wins)."""
    if rpc.method.name != "StartDistillation":
        return body
    try:
        request = admin_pb2.StartDistillationRequest.FromString(body)
    except DecodeError:
        return body
    return body if request.collection else body + _no_training(admin_pb2.StartDistillationRequest()).SerializeToString()


EXAMPLES = 20  # typed messages per RPC
EXPENSIVE = {"Ingest": 40, "Generate": 30, "Precompute": 12, "Segment": 15}  # each one runs the model
RAW_EXAMPLES = 8  # bytes per RPC
METADATA_EXAMPLES = 10  # metadata per RPC
SCALE = int(os.environ.get("BLOCKRAG_FUZZ_SCALE", "1"))  # a deeper run: that many times the examples
FUZZ = settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck),
                print_blob=False)


@dataclass
class Ledger:
    """What the fuzzing wrote and failed to write, for the half-written checks."""

    written: set[tuple[str, str]] = field(default_factory=set)  # (tenant, collection) with an accepted write
    refused: set[tuple[str, str]] = field(default_factory=set)  # ... with a refused Ingest
    calls: dict[str, dict[str, int]] = field(default_factory=dict)  # rpc -> status -> count

    def count(self, rpc: Rpc, code: Code) -> None:
        by_code = self.calls.setdefault(str(rpc), {})
        by_code[code.name] = by_code.get(code.name, 0) + 1


LEDGER = Ledger()


@pytest.fixture(scope="module")
def fuzz_platform(tmp_path_factory):
    running = start_platform(tmp_path_factory.mktemp("fuzz-platform"))
    yield running
    code = stop_platform(running)
    assert code == 0, f"`blockrag up` did not stop cleanly after the fuzzing (exit {code}):\n{running.log_tail()}"


@pytest.fixture(scope="module")
def channel(fuzz_platform):
    with grpc.insecure_channel(fuzz_platform.grpc, options=[("grpc.max_receive_message_length", 64 << 20)]) as c:
        yield c


@pytest.fixture(scope="module")
def admin_key(channel) -> str:
    """An admin key (this platform runs without --auth: AdminService is open)."""
    code, _, replies = call(channel, Rpc("admin", APPLICATIONS["admin"].methods_by_name["CreateApiKey"]),
                            admin_pb2.CreateApiKeyRequest(tenant="ops", role=admin_pb2.ROLE_ADMIN).SerializeToString(),
                            (("application", "admin"),))
    assert code == Code.OK
    return admin_pb2.CreateApiKeyResponse.FromString(replies[0]).api_key


def call(channel, rpc: Rpc, body: bytes, metadata: tuple) -> tuple[Code, str, list[bytes]]:
    """Send `body` as the request, as is; (status, details, the raw replies)."""
    streaming = rpc.method.server_streaming
    stub = (channel.unary_stream if streaming else channel.unary_unary)(rpc.path)  # no (de)serializers
    try:
        replies = list(stub(body, metadata=metadata, timeout=CALL_TIMEOUT_S)) if streaming else \
            [stub(body, metadata=metadata, timeout=CALL_TIMEOUT_S)]
    except grpc.RpcError as e:
        return e.code(), e.details() or "", []
    return Code.OK, "", replies


def routed(rpc: Rpc, admin_key: str) -> tuple:
    """The metadata a well-behaved client sends for rpc."""
    if rpc.app is None:
        return ()
    metadata = (("application", rpc.app),)
    return metadata + ((("authorization", f"Bearer {admin_key}"),) if rpc.app in INTERNAL_APPS else ())


def check_answer(rpc: Rpc, code: Code, details: str, replies: list[bytes], sent: list[str]) -> None:
    """The contract every answer keeps, whatever was sent."""
    LEDGER.count(rpc, code)
    assert code in ALLOWED, f"{rpc}: {code.name} for a client's request: {details!r}"
    for leak in LEAKS.finditer(details):
        assert any(leak.group() in s for s in sent), f"{rpc}: the details show {leak.group()!r}: {details!r}"
    if code == Code.OK:
        response = GetMessageClass(rpc.method.output_type)
        parsed = [response.FromString(r) for r in replies]
        if rpc.method.name == "Generate":  # a stream that ends well ends with its usage
            assert parsed and parsed[-1].done and parsed[-1].usage.model_version, f"{rpc}: no done message"


def has_nan(message: Message) -> bool:
    for f, value in message.ListFields():
        values = value if f.is_repeated else [value]
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            values = list(value.values())
        for v in values:
            if isinstance(v, Message) and has_nan(v):
                return True
            if f.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE) and isinstance(v, float) \
                    and math.isnan(v):
                return True
    return False


def record_write(rpc: Rpc, request: Message, code: Code) -> None:
    if rpc.method.name == "Ingest":
        key = (request.tenant or "default", request.collection)
        (LEDGER.written if code == Code.OK else LEDGER.refused).add(key)
    elif rpc.method.name == "RegisterBlocks" and code == Code.OK and request.collection:
        LEDGER.written.add((request.tenant or "default", request.collection))


def examples(n: int):
    return settings(FUZZ, max_examples=n * SCALE)


# ---- well-typed random messages ------------------------------------------------------------------

@pytest.mark.parametrize("rpc", RPCS, ids=str)
def test_random_messages(channel, admin_key, rpc):
    @examples(EXPENSIVE.get(rpc.method.name, EXAMPLES))
    @given(request=requests_for(rpc))
    def fuzz(request):
        code, details, replies = call(channel, rpc, request.SerializeToString(), routed(rpc, admin_key))
        record_write(rpc, request, code)
        check_answer(rpc, code, details, replies, strings_of(request))
        assert not (has_nan(request) and code == Code.OK), f"{rpc}: a NaN was accepted: {request}"

    fuzz()


# every float of a request, set to NaN in a request that is otherwise valid (the random messages
# reach a NaN only by chance): never accepted, INVALID_ARGUMENT naming it
NAN_REQUESTS = {
    "Segment": lambda: segmentation_pb2.SegmentRequest(
        text="One line.", options=segmentation_pb2.SegmentOptions(granularity=math.nan)),
    "Ingest": lambda: generation_pb2.IngestRequest(
        collection="nan", documents=_documents(["One line."]),
        segment_options=segmentation_pb2.SegmentOptions(granularity=math.nan)),
    "Generate": lambda: generation_pb2.GenerateRequest(
        question="Why?", temperature=math.nan, context=[generation_pb2.ContextBlock(text="One line.")]),
    "SweepCache": lambda: admin_pb2.SweepCacheRequest(grace_s=math.nan, dry_run=True),
    "EvictCache": lambda: admin_pb2.EvictCacheRequest(ttl_s=math.nan),
}


def test_float_fields_are_all_covered():
    floats = {str(rpc) for rpc in RPCS if _has_float(rpc.method.input_type)}
    assert floats == {str(rpc) for rpc in RPCS if rpc.method.name in NAN_REQUESTS}


def _has_float(descriptor, depth: int = 0) -> bool:
    return depth < 4 and any(f.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE) or (
        f.message_type is not None and _has_float(f.message_type, depth + 1)) for f in descriptor.fields)


@pytest.mark.parametrize("rpc", [r for r in RPCS if r.method.name in NAN_REQUESTS], ids=str)
def test_nan_is_refused(channel, admin_key, rpc):
    request = NAN_REQUESTS[rpc.method.name]()
    code, details, _ = call(channel, rpc, request.SerializeToString(), routed(rpc, admin_key))
    assert code == Code.INVALID_ARGUMENT and "nan" in details.lower(), f"{rpc}: {code.name} {details!r}"


def test_a_tiny_temperature_samples(channel):
    """Found by the fuzzing (BLOCKRAG_FUZZ_SCALE=10): temperature 1.4e-45, the smallest float."""
    generate = Rpc("generation", APPLICATIONS["generation"].methods_by_name["Generate"])
    for temperature in (1.4e-45, 1e-38):
        code, details, _ = call(channel, generate, generation_pb2.GenerateRequest(
            question="Why?", temperature=temperature, max_new_tokens=1,
            context=[generation_pb2.ContextBlock(text="One line.")]).SerializeToString(), routed(generate, ""))
        assert code == Code.OK, f"temperature {temperature}: {code.name} {details!r}"


# ---- malformed bytes -------------------------------------------------------------------------------

def bodies(rpc: Rpc) -> st.SearchStrategy[bytes]:
    """Random bytes, and valid messages cut short or with a byte changed."""
    valid = requests_for(rpc).map(lambda m: m.SerializeToString())

    def mutate(data: bytes, at: int, byte: int, cut: bool) -> bytes:
        if not data:
            return bytes([byte])
        at %= len(data)
        return data[:at] if cut else data[:at] + bytes([byte]) + data[at + 1:]

    return st.one_of(st.binary(max_size=64), st.builds(mutate, valid, st.integers(0, 1 << 16), st.integers(0, 255),
                                                       st.booleans()),
                     st.sampled_from([b"\xff", b"\x08", b"\x0a\x05ab", b"\x0a\x02\xff\xfe", b"\x80" * 11]))


@pytest.mark.parametrize("rpc", RPCS, ids=str)
def test_malformed_bytes(channel, admin_key, rpc):
    @examples(RAW_EXAMPLES)
    @given(body=bodies(rpc).map(lambda b: untrained(rpc, b)))
    def fuzz(body):
        try:
            request = rpc.request_type.FromString(body)
        except DecodeError:
            request = None
        code, details, replies = call(channel, rpc, body, routed(rpc, admin_key))
        if request is None:
            LEDGER.count(rpc, code)
            assert code == Code.INVALID_ARGUMENT, f"{rpc}: {code.name} for bytes that do not parse: {details!r}"
            assert not LEAKS.search(details), f"{rpc}: {details!r}"
            return
        record_write(rpc, request, code)
        check_answer(rpc, code, details, replies, strings_of(request))

    fuzz()


def test_health_watch_refuses_bytes_that_do_not_parse(channel):
    watch = health_pb2.DESCRIPTOR.services_by_name["Health"].methods_by_name["Watch"]
    code, details, _ = call(channel, Rpc(None, watch), b"\x0a\x02\xff\xfe", ())
    assert code == Code.INVALID_ARGUMENT and "not a valid grpc.health.v1.HealthCheckRequest" in details, details


# ---- random metadata -------------------------------------------------------------------------------

PRINTABLE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)  # gRPC's ASCII values
KEYS = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,12}", fullmatch=True).filter(
    lambda k: not k.startswith("grpc-") and k not in {"application", "authorization", "te", "content-type",
                                                       "user-agent", "host"} and not k.endswith("-bin"))


def metadata_for(rpc: Rpc, admin_key: str) -> st.SearchStrategy[tuple]:
    apps = st.sampled_from([*APPLICATIONS, "", "nope", "Generation", "generation "])
    application = st.one_of(st.none(), st.just(rpc.app or "generation"), st.sampled_from(list(APPLICATIONS)), apps,
                            PRINTABLE)
    authorization = st.one_of(st.none(), PRINTABLE, PRINTABLE.map(lambda s: f"Bearer {s}"),
                              st.just(f"Bearer {admin_key}"), st.just(f"bearer {admin_key}"),
                              st.just(f"Bearer {admin_key}x"),
                              st.from_regex(r"Bearer brk_[0-9a-f]{16}_[A-Za-z0-9_-]{8,43}", fullmatch=True))
    extra = st.lists(st.one_of(st.tuples(KEYS, PRINTABLE), st.tuples(KEYS.map(lambda k: f"{k}-bin"),
                                                                        st.binary(max_size=32))), max_size=4)

    def build(app, auth, more, twice):
        md = [("application", app)] if app is not None else []
        md += [("application", twice)] if twice is not None else []
        md += [("authorization", auth)] if auth is not None else []
        return tuple(md + more)

    return st.builds(build, application, authorization, extra, st.one_of(st.none(), apps))


@pytest.mark.parametrize("rpc", RPCS, ids=str)
def test_random_metadata(channel, admin_key, rpc):
    body = untrained(rpc, rpc.request_type().SerializeToString())  # empty: refused, or it asks little

    @examples(METADATA_EXAMPLES)
    @given(metadata=metadata_for(rpc, admin_key))
    def fuzz(metadata):
        code, details, replies = call(channel, rpc, body, metadata)
        check_answer(rpc, code, details, replies, [v if isinstance(v, str) else "" for _, v in metadata])

    fuzz()


# ---- afterwards: still up, nothing half-written ----------------------------------------------------

def test_the_services_still_answer(channel, admin_key):
    health = Rpc(None, HEALTH)
    for service in ["", *(s.full_name for s in APPLICATIONS.values())]:
        code, details, replies = call(channel, health, health_pb2.HealthCheckRequest(service=service).SerializeToString(), ())
        assert code == Code.OK, details
        assert health_pb2.HealthCheckResponse.FromString(replies[0]).status == health_pb2.HealthCheckResponse.SERVING
    admin_health = Rpc("admin", APPLICATIONS["admin"].methods_by_name["Health"])
    code, details, replies = call(channel, admin_health, b"", routed(admin_health, admin_key))
    assert code == Code.OK, details
    assert all(s.healthy for s in admin_pb2.HealthResponse.FromString(replies[0]).services)

    generation = APPLICATIONS["generation"]
    ingest = Rpc("generation", generation.methods_by_name["Ingest"])
    code, details, replies = call(channel, ingest, generation_pb2.IngestRequest(
        collection="after-fuzz", documents=[generation_pb2.Document(
            id="harbour", text="The harbour office of Tolvik opens at seven.")]).SerializeToString(), routed(ingest, ""))
    assert code == Code.OK, details
    generate = Rpc("generation", generation.methods_by_name["Generate"])
    code, details, replies = call(channel, generate, generation_pb2.GenerateRequest(
        question="When does the harbour office open?", collection="after-fuzz", max_new_tokens=4).SerializeToString(),
        routed(generate, ""))
    assert code == Code.OK, details
    done = generation_pb2.GenerateResponse.FromString(replies[-1])
    assert done.done and done.usage.completion_tokens > 0 and len(done.usage.block_ids) == 1


def test_nothing_half_written(fuzz_platform):
    assert LEDGER.refused, "no Ingest was refused: the fuzzing did not reach the half-written case"
    store = LocalObjectStore(fuzz_platform.state_dir / "kv")
    with CacheIndex.open(f"sqlite:///{fuzz_platform.state_dir / 'index.db'}") as index:
        for tenant, collection in sorted(LEDGER.refused - LEDGER.written):
            try:
                blocks = index.list_collection(tenant, collection)
            except InvalidRequestError:  # a name the index takes from no one: nothing is under it
                continue
            assert not blocks, f"a refused Ingest left blocks in collection {collection!r} of tenant {tenant!r}"
        report = sweep_orphans(index, store, grace_s=0, dry_run=True)
        assert report.deleted == 0, f"{report.deleted} stored objects that no index row names"
        with index.engine.connect() as conn:
            open_writes = conn.execute(sa.text("SELECT count(*) FROM kv_writes")).scalar()
            locations = conn.execute(sa.text("SELECT location FROM kv_entries")).scalars().all()
    assert open_writes == 0, f"{open_writes} KV writes begun and never finished"
    missing = [loc for loc in locations if not store.exists(loc)]
    assert not missing, f"index rows naming missing objects: {missing[:3]}"
    partial = list((fuzz_platform.state_dir / "kv").glob("*/.tmp-*"))
    assert not partial, f"partial writes left: {partial[:3]}"


def test_every_rpc_was_fuzzed():
    """Each RPC got its examples, and the fuzzing reached past the checks somewhere (some OK)."""
    assert {str(r) for r in RPCS} <= set(LEDGER.calls), sorted({str(r) for r in RPCS} - set(LEDGER.calls))
    print({rpc: dict(sorted(codes.items())) for rpc, codes in sorted(LEDGER.calls.items())})
