"""The proto contract: committed stubs up to date, buf lint clean, the public fields and RPCs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor

from blockrag.v1 import admin_pb2, cache_index_pb2, generation_pb2, precompute_pb2, segmentation_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
STUBS = ROOT / "libs" / "blockrag" / "v1"


def load_generator():
    spec = importlib.util.spec_from_file_location("protos_generate", PROTOS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_are_up_to_date(tmp_path):
    written = load_generator().generate(tmp_path)
    fresh = tmp_path / "blockrag" / "v1"
    assert {p.name for p in written} == {p.name for p in fresh.iterdir()}
    committed = {p.name for p in STUBS.iterdir() if p.name != "__pycache__"}
    assert {p.name for p in written} == committed
    stale = [p.name for p in written if p.read_bytes() != (STUBS / p.name).read_bytes()]
    assert stale == [], "run .venv/bin/python protos/generate.py"
    assert {"segmentation_pb2.pyi", "generation_pb2_grpc.py", "__init__.py"} <= committed


def test_buf_lint_passes():
    buf = Path(sys.executable).parent / "buf"
    assert buf.exists(), f"buf is not installed next to {sys.executable}"
    result = subprocess.run([str(buf), "lint"], cwd=PROTOS, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


REPEATED = "repeated"


def fields(message) -> dict[str, str]:
    """name -> type name (message/enum full name, or scalar type), prefixed 'repeated ' if so."""
    out = {}
    for f in message.DESCRIPTOR.fields:
        if f.message_type is not None:
            kind = f.message_type.full_name
        elif f.enum_type is not None:
            kind = f.enum_type.full_name
        else:
            kind = {FieldDescriptor.TYPE_STRING: "string", FieldDescriptor.TYPE_INT32: "int32",
                    FieldDescriptor.TYPE_INT64: "int64", FieldDescriptor.TYPE_BOOL: "bool",
                    FieldDescriptor.TYPE_FLOAT: "float", FieldDescriptor.TYPE_DOUBLE: "double",
                    FieldDescriptor.TYPE_BYTES: "bytes"}[f.type]
        is_map = f.message_type is not None and f.message_type.GetOptions().map_entry
        repeated = f.is_repeated and not is_map
        out[f.name] = f"{REPEATED} {kind}" if repeated else kind
    return out


def has(message, **expected: str) -> None:
    actual = fields(message)
    missing = {name: kind for name, kind in expected.items() if actual.get(name) != kind}
    assert not missing, f"{message.DESCRIPTOR.full_name}: expected {missing}, has {actual}"


def test_segmentation_contract():
    has(segmentation_pb2.SegmentRequest, text="string", options="blockrag.v1.SegmentOptions")
    has(segmentation_pb2.SegmentOptions, max_block_tokens="int32", min_block_tokens="int32", granularity="float")
    has(segmentation_pb2.SegmentResponse, blocks="repeated blockrag.v1.Segment")
    has(segmentation_pb2.Segment, start="int32", end="int32", text="string", token_count="int32")


def test_precompute_contract():
    has(precompute_pb2.PrecomputeRequest, texts="repeated string", model_version="string", return_kv="bool")
    has(precompute_pb2.PrecomputeResponse, blocks="repeated blockrag.v1.BlockEntry")
    has(precompute_pb2.BlockEntry, block_id="string", token_count="int32", nbytes="int64", tier="string", kv="bytes")


def test_cache_index_contract():
    has(cache_index_pb2.LookupRequest, block_ids="repeated string", model_version="string")
    has(cache_index_pb2.LookupResponse, results="repeated blockrag.v1.LookupResult")
    has(cache_index_pb2.LookupResult, block_id="string", hit="bool", location="string", nbytes="int64")


def test_generation_contract():
    has(generation_pb2.IngestRequest, collection="string", documents="repeated blockrag.v1.Document")
    has(generation_pb2.Document, id="string", text="string")
    has(generation_pb2.IngestResponse, documents="repeated blockrag.v1.IngestedDocument")
    has(generation_pb2.IngestedDocument, document_id="string", block_ids="repeated string")
    has(generation_pb2.GenerateRequest, context="repeated blockrag.v1.ContextBlock", question="string",
        max_new_tokens="int32", temperature="float")
    has(generation_pb2.ContextBlock, block_id="string", text="string")
    oneof = generation_pb2.ContextBlock.DESCRIPTOR.oneofs_by_name["block"]
    assert [f.name for f in oneof.fields] == ["block_id", "text"]
    has(generation_pb2.GenerateResponse, text="string", done="bool", usage="blockrag.v1.Usage")
    has(generation_pb2.Usage, prompt_tokens="int32", cached_tokens="int32", computed_tokens="int32",
        ttft_ms="double")


def test_blocks_by_tier_is_a_string_to_int32_map():
    field = generation_pb2.Usage.DESCRIPTOR.fields_by_name["blocks_by_tier"]
    entry = field.message_type
    assert entry.GetOptions().map_entry
    assert entry.fields_by_name["key"].type == FieldDescriptor.TYPE_STRING
    assert entry.fields_by_name["value"].type == FieldDescriptor.TYPE_INT32
    usage = generation_pb2.Usage(blocks_by_tier={"memory": 2, "store": 1})
    assert dict(generation_pb2.Usage.FromString(usage.SerializeToString()).blocks_by_tier) == {"memory": 2, "store": 1}


@pytest.mark.parametrize(("module", "service", "rpcs"), [
    (segmentation_pb2, "SegmentationService", {"Segment"}),
    (precompute_pb2, "PrecomputeService", {"Precompute"}),
    (cache_index_pb2, "CacheIndexService",
     {"Lookup", "Stats", "Evict", "RegisterBlocks", "GetBlocks", "CommitEntries", "ListCollection",
      "Search"}),
    (generation_pb2, "GenerationService", {"Ingest", "Generate"}),
    (admin_pb2, "AdminService", {"Health", "ListModelVersions", "CacheStats", "StartDistillation",
                                 "GetDistillation", "ListDistillations", "CancelDistillation", "WatchDistillation",
                                 "PromoteModelVersion", "RollbackModelVersion", "CreateApiKey", "ListApiKeys",
                                 "RevokeApiKey", "SweepCache", "EvictCache"}),
])
def test_services_and_rpcs(module, service, rpcs):
    descriptor = module.DESCRIPTOR.services_by_name[service]
    assert descriptor.full_name == f"blockrag.v1.{service}"
    assert {m.name for m in descriptor.methods} == rpcs
    streaming = {m.name for m in descriptor.methods if m.server_streaming or m.client_streaming}
    assert streaming == {"GenerationService": {"Generate"}, "AdminService": {"WatchDistillation"}}.get(service, set())


def test_cache_index_search_contract():
    has(cache_index_pb2.SearchRequest, tenant="string", collection="string", query="string", k="int32")
    has(cache_index_pb2.SearchHit, block_id="string", score="double", text="string", token_count="int32")
    has(cache_index_pb2.SearchResponse, hits="repeated blockrag.v1.SearchHit")
    has(cache_index_pb2.ListCollectionRequest, tenant="string", collection="string", limit="int32")


def test_admin_cache_maintenance_contract():
    has(admin_pb2.SweepCacheRequest, grace_s="double", dry_run="bool")
    has(admin_pb2.SweepCacheResponse, scanned="int64", deleted="int64", deleted_bytes="int64", young="int64",
        expired_writes="int64", partial_writes="int64")
    has(admin_pb2.Watermarks, high_bytes="int64", low_bytes="int64")
    has(admin_pb2.EvictCacheRequest, tenant_bounds="blockrag.v1.Watermarks", store_bounds="blockrag.v1.Watermarks",
        ttl_s="double", tenant="string")
    has(admin_pb2.TenantBytes, tenant="string", entries="int64", bytes="int64")
    has(admin_pb2.EvictCacheResponse, entries="int64", bytes="int64", tenants="repeated blockrag.v1.TenantBytes")
    has(admin_pb2.CacheStatsResponse, index="blockrag.v1.StatsResponse",
        replicas="repeated blockrag.v1.ReplicaCacheStats", tenants="repeated blockrag.v1.TenantBytes")
    assert admin_pb2.EvictCacheResponse.DESCRIPTOR.fields_by_name["by_reason"].message_type.GetOptions().map_entry
    # presence: unset (every tenant) differs from "" (the default tenant)
    assert not admin_pb2.EvictCacheRequest().HasField("tenant")
    assert admin_pb2.EvictCacheRequest(tenant="").HasField("tenant")


def test_admin_api_key_contract():
    has(admin_pb2.CreateApiKeyRequest, tenant="string", role="blockrag.v1.Role", label="string")
    has(admin_pb2.CreateApiKeyResponse, key="blockrag.v1.ApiKey", api_key="string")
    has(admin_pb2.ApiKey, key_id="string", tenant="string", role="blockrag.v1.Role", label="string",
        created_at="double", revoked_at="double")
    has(admin_pb2.RevokeApiKeyRequest, key_id="string")
    assert [admin_pb2.Role.Name(v) for v in sorted(admin_pb2.Role.values())] == [
        "ROLE_UNSPECIFIED", "ROLE_READER", "ROLE_WRITER", "ROLE_ADMIN"]


def test_admin_distillation_contract():
    has(admin_pb2.StartDistillationRequest, tenant="string", collection="string", directory="string", steps="int32",
        examples="int32", eval_questions="int32", config_json="string", auto_promote="bool")
    has(admin_pb2.StartDistillationResponse, run="blockrag.v1.DistillationRun")
    has(admin_pb2.DistillationRun, run_id="string", tenant="string", status="string", step="int32",
        total_steps="int32", phase="string", loss="double", kl="double", tokens_per_s="double",
        metrics_json="string", version_id="string", error="string")
    has(admin_pb2.GetDistillationResponse, run="blockrag.v1.DistillationRun", version="blockrag.v1.RegisteredVersion")
    has(admin_pb2.ListDistillationsResponse, runs="repeated blockrag.v1.DistillationRun")
    has(admin_pb2.WatchDistillationResponse, run="blockrag.v1.DistillationRun")
    has(admin_pb2.PromoteModelVersionRequest, version="string", tenant="string")
    has(admin_pb2.RollbackModelVersionRequest, tenant="string")
    has(admin_pb2.RollbackModelVersionResponse, version="blockrag.v1.RegisteredVersion")
    has(admin_pb2.ListModelVersionsResponse, versions="repeated blockrag.v1.ModelVersion",
        registered="repeated blockrag.v1.RegisteredVersion")
    has(admin_pb2.RegisteredVersion, version_id="string", tenant="string", status="string", parent_version="string",
        fingerprint="string", training_json="string", created_at="double")
    assert admin_pb2.RegisteredVersion.DESCRIPTOR.fields_by_name["evaluation"].message_type.GetOptions().map_entry
    # presence: "unset" (every scope, the version's own scope) differs from "" (the shared scope)
    assert not admin_pb2.ListDistillationsRequest().HasField("tenant")
    assert admin_pb2.PromoteModelVersionRequest(tenant="").HasField("tenant")


def test_generate_is_server_streaming():
    method = generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].methods_by_name["Generate"]
    assert method.server_streaming and not method.client_streaming
    assert method.input_type.full_name == "blockrag.v1.GenerateRequest"
    assert method.output_type.full_name == "blockrag.v1.GenerateResponse"
