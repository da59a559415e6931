"""The tester's exploit against the running platform (issue 14, item 3): tenant B's entry is
pointed at tenant A's stored object (the row rewritten in the platform's own index, as the
CommitEntries RPC once let any client do) and B asks over gRPC. B's answer must be built on B's
own block, recomputed, never on A's secret; the refusal is counted in the metrics; A's entry and
object are untouched."""

from __future__ import annotations

import urllib.request
import uuid

from calls import GENERATION, ask

from blockrag.kvcache.index import CacheIndex, KVEntry
from blockrag.kvcache.object_store import LocalObjectStore
from blockrag.pipeline import LocalPipeline
from blockrag.v1 import generation_pb2 as pb

QUESTION = "What is the vault code?"


def rejected(platform, reason: str) -> float:
    text = urllib.request.urlopen(f"http://{platform.metrics}/metrics", timeout=10).read().decode()
    line = f'blockrag_kv_entries_rejected_total{{reason="{reason}"}} '
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(line))


def ingest(generation, tenant: str, text: str) -> str:
    reply = generation.Ingest(pb.IngestRequest(collection="binding", tenant=tenant, documents=[
        pb.Document(id="d", text=text)]), metadata=GENERATION)
    (block_id,) = reply.documents[0].block_ids  # one sentence: one block
    return block_id


def test_an_entry_pointed_at_another_tenants_object_is_not_served(platform, generation, served_runtime):
    run = uuid.uuid4().hex[:8]
    a, b = f"acme-{run}", f"globex-{run}"
    secret, mine = "The vault code of Acme is 7391.", "The vault code of Globex is not written down."
    secret_id, mine_id = ingest(generation, a, secret), ingest(generation, b, mine)
    store = LocalObjectStore(platform.state_dir / "kv")
    with CacheIndex.open(f"sqlite:///{platform.state_dir / 'index.db'}") as index:
        row = index.lookup(a, [secret_id], served_runtime.version)[0]
        assert row.hit
        secret_at = row.location
        index.commit_entries(b, [KVEntry(mine_id, served_runtime.version, secret_at, row.nbytes)])
    before = rejected(platform, "foreign")

    text, usage = ask(generation, pb.GenerateRequest(question=QUESTION, tenant=b, max_new_tokens=12,
                                                     context=[pb.ContextBlock(block_id=mine_id)]))
    pipeline = LocalPipeline(served_runtime.engine, served_runtime.tokenizer)
    kvs, _ = pipeline.context_blocks([mine])
    assert text == "".join(pipeline.answer(kvs, QUESTION, max_new_tokens=12))
    assert dict(usage.blocks_by_tier) == {"computed": 1} and "7391" not in text
    assert rejected(platform, "foreign") == before + 1

    with CacheIndex.open(f"sqlite:///{platform.state_dir / 'index.db'}") as index:
        (mended,) = index.lookup(b, [mine_id], served_runtime.version)
        (kept,) = index.lookup(a, [secret_id], served_runtime.version)
    assert mended.hit and mended.location != secret_at
    assert kept.location == secret_at and store.exists(secret_at)
