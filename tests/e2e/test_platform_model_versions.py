"""Model versions on the running platform: a version registered and promoted in the platform's
registry (as `blockrag-admin model promote` does) reaches Generation without a restart while a
client keeps asking, its first answer finds its blocks already re-encoded, other tenants keep
their model, and a rollback switches back. The version is a random LoRA adapter of the default
model, scoped to a tenant of its own so that the other tests' answers do not change."""

from __future__ import annotations

import time

from calls import ask
from tiny_versions import random_adapter, register

from blockrag.kvcache.index import open_index_engine
from blockrag.kvcache.object_store import LocalObjectStore
from blockrag.registry import ModelRegistry
from blockrag.v1 import generation_pb2 as pb

TENANT = "versions-e2e"


def ask_until(generation, request: pb.GenerateRequest, version: str, timeout: float = 240) -> list[pb.Usage]:
    """Ask until an answer comes from `version`; every answer on the way must succeed."""
    usages, deadline = [], time.monotonic() + timeout
    while not usages or usages[-1].model_version != version:
        assert time.monotonic() < deadline, f"still on {usages[-1].model_version[:12]} after {timeout} s"
        usages.append(ask(generation, request)[1])
        time.sleep(0.2)
    return usages


def test_promotion_and_rollback_reach_generation_while_a_client_asks(platform, generation, ingested, block_texts):
    texts = [block_texts[b] for d in ingested.documents for b in d.block_ids][:3]
    request = pb.GenerateRequest(context=[pb.ContextBlock(text=t) for t in texts], question="What is this about?",
                                 max_new_tokens=4, tenant=TENANT)
    configured = ask(generation, request)[1].model_version

    engine = open_index_engine(f"sqlite:///{platform.state_dir / 'index.db'}")
    try:
        registry = ModelRegistry(engine)
        adapter, fingerprint = random_adapter(None, seed=7, scale=0.002)
        version = register(registry, LocalObjectStore(platform.state_dir / "kv"), TENANT, adapter, fingerprint,
                           name="e2e-version.adapter.safetensors")
        registry.promote(version.version_id, TENANT)
        usages = ask_until(generation, request, fingerprint)
        assert {u.model_version for u in usages[:-1]} <= {configured}
        # warmed before the switch: the new version's first answer computed none of its blocks
        assert "computed" not in usages[-1].blocks_by_tier, usages[-1]
        other = pb.GenerateRequest(context=request.context, question=request.question, max_new_tokens=4)
        assert ask(generation, other)[1].model_version == configured  # the default tenant keeps its model

        registry.rollback(TENANT)
        back = ask_until(generation, request, configured)
        assert back[-1].blocks_by_tier["memory"] == 3  # the configured model's entries stayed in memory
    finally:
        engine.dispose()
