"""Bad requests get the right gRPC status and a message a user can act on, never a stack trace."""

from __future__ import annotations

import grpc
import pytest
from calls import ADMIN, CACHE_INDEX, COLLECTION, GENERATION, PRECOMPUTE, ask, with_key

from blockrag.v1 import admin_pb2, admin_pb2_grpc, cache_index_pb2, cache_index_pb2_grpc, precompute_pb2
from blockrag.v1 import precompute_pb2_grpc
from blockrag.v1 import generation_pb2 as pb

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
CASES = {
    "empty question": (pb.GenerateRequest(question="  ", collection=COLLECTION), INVALID, "question is empty"),
    "unknown block id": (pb.GenerateRequest(question="q?", context=[pb.ContextBlock(block_id="blk_nope")]),
                         NOT_FOUND, "unknown block id(s) blk_nope"),
    "unknown collection": (pb.GenerateRequest(question="q?", collection="no-such-collection"), NOT_FOUND,
                           "collection 'no-such-collection' has no documents"),
    "too many blocks": (pb.GenerateRequest(question="q?", context=[pb.ContextBlock(text=f"t{i}") for i in range(65)]),
                        INVALID, "65 context blocks, over the limit of 64"),
    "too many new tokens": (pb.GenerateRequest(question="q?", collection=COLLECTION, max_new_tokens=5000), INVALID,
                            "max_new_tokens must be between 1 and 1024"),
    "too many tokens": (pb.GenerateRequest(question="q?", context=[pb.ContextBlock(text="word " * 2000)]), INVALID,
                        "over the limit of 1024 tokens"),
    "no context": (pb.GenerateRequest(question="q?"), INVALID, "pass context blocks or a collection"),
    "bad temperature": (pb.GenerateRequest(question="q?", collection=COLLECTION, temperature=9), INVALID,
                        "temperature must be in [0, 2]"),
}


def _no_trace(details: str) -> None:
    assert "Traceback" not in details and 'File "' not in details and "ray::" not in details, details


@pytest.mark.parametrize("case", CASES)
def test_generate_status(generation, ingested, case):
    request, code, message = CASES[case]
    with pytest.raises(grpc.RpcError) as error:
        ask(generation, request)
    assert error.value.code() == code, error.value.details()
    assert message in error.value.details()
    _no_trace(error.value.details())


@pytest.mark.parametrize("request_, message", [
    (pb.IngestRequest(collection="c"), "documents is empty"),
    (pb.IngestRequest(documents=[pb.Document(id="a", text="x")]), "collection is required"),
    (pb.IngestRequest(collection="c", documents=[pb.Document(id="a", text="x")] * 2), "unique"),
    (pb.IngestRequest(collection="c", documents=[pb.Document(id="a", text=" ")]), "have no text"),
])
def test_ingest_rejects_bad_documents(generation, request_, message):
    with pytest.raises(grpc.RpcError) as error:
        generation.Ingest(request_, metadata=GENERATION)
    assert error.value.code() == INVALID and message in error.value.details()
    _no_trace(error.value.details())


def test_a_model_version_unknown_to_the_registry_is_not_found(channel, admin_key):
    stub = precompute_pb2_grpc.PrecomputeServiceStub(channel)
    with pytest.raises(grpc.RpcError) as error:
        stub.Precompute(precompute_pb2.PrecomputeRequest(texts=["x"], model_version="0" * 64),
                        metadata=with_key(PRECOMPUTE, admin_key))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "model version 0000000000000000... is not served for tenant 'default'" in error.value.details()
    assert "leave model_version empty" in error.value.details()


def test_internal_services_refuse_outside_calls_without_an_admin_key(channel, ingested):
    """Through Ray Serve's proxy: the cache index and precompute are reached by the other services
    through handles; from the gRPC port they need an admin key, though this platform runs without
    authentication."""
    ids = [b for d in ingested.documents for b in d.block_ids]
    calls = [
        lambda m: cache_index_pb2_grpc.CacheIndexServiceStub(channel).GetBlocks(
            cache_index_pb2.GetBlocksRequest(block_ids=ids), metadata=m),
        lambda m: precompute_pb2_grpc.PrecomputeServiceStub(channel).Precompute(
            precompute_pb2.PrecomputeRequest(texts=["x"]), metadata=m),
    ]
    for call, app in zip(calls, (CACHE_INDEX, PRECOMPUTE)):
        with pytest.raises(grpc.RpcError) as error:
            call(app)
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED, error.value.details()
        assert "is internal" in error.value.details() and "admin API key" in error.value.details()
        _no_trace(error.value.details())


def test_an_unknown_distillation_run_is_not_found(channel):
    with pytest.raises(grpc.RpcError) as error:
        admin_pb2_grpc.AdminServiceStub(channel).GetDistillation(admin_pb2.GetDistillationRequest(run_id="run_nope"),
                                                                 metadata=ADMIN)
    assert error.value.code() == NOT_FOUND
    assert "unknown distillation run 'run_nope'" in error.value.details()
    _no_trace(error.value.details())
