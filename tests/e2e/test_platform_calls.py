"""Calls between deployments per question on the local platform (`blockrag up`, real Ray),
counted from the services' own request counters (blockrag_requests_total on the metrics port):
every servicer method counts its calls, those through deployment handles included.

- a question over 8 cached blocks of a collection: 1 call (Search); at most 3 is the target;
- the same blocks by id: 0 calls;
- a cold question (8 blocks of a collection whose KV was evicted, never seen by the replica):
  2 calls (Search, then one Precompute whose answer carries the KV);
- an ingest of N short documents: one Segment call each, one Precompute call (they fit one
  precompute_batch_tokens) and ONE RegisterBlocks for every document written (was one each).
"""

from __future__ import annotations

import urllib.request
from collections import Counter

from calls import CACHE_INDEX, GENERATION, ask, with_key
from prometheus_client.parser import text_string_to_metric_families

from blockrag.v1 import cache_index_pb2, cache_index_pb2_grpc
from blockrag.v1 import generation_pb2 as pb

TENANT = "calls-test"
TOWNS = ["Tolvik", "Orsa", "Brennholt", "Skarvholm", "Veldmark", "Auna", "Kessel", "Lindvik"]
QUESTION = "When does the harbour office of the town open?"


def calls(platform) -> Counter[tuple[str, str]]:
    """(service, method) -> requests handled so far, generation's own excluded (the client's)."""
    text = urllib.request.urlopen(f"http://{platform.metrics}/metrics", timeout=10).read().decode()
    out: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "blockrag_requests_total" and sample.labels["service"] != "generation":
                out[(sample.labels["service"], sample.labels["method"])] += int(sample.value)
    return out


def between(platform, request: pb.GenerateRequest, generation) -> tuple[Counter, pb.Usage]:
    before = calls(platform)
    _, usage = ask(generation, request)
    after = calls(platform)
    return +(after - before), usage


def ingest(generation, collection: str, word: str) -> list[str]:
    documents = [pb.Document(id=town, text=f"The {word} harbour office of the town of {town} opens at {7 + i}.")
                 for i, town in enumerate(TOWNS)]
    reply = generation.Ingest(pb.IngestRequest(collection=collection, tenant=TENANT, documents=documents),
                              metadata=GENERATION)
    ids = [b for d in reply.documents for b in d.block_ids]
    assert len(ids) == 8  # one block per short document
    return ids


def test_calls_between_deployments_per_question(platform, generation, channel, admin_key):
    ids = ingest(generation, "towns", "old")
    question = pb.GenerateRequest(question=QUESTION, collection="towns", top_k=8, tenant=TENANT, max_new_tokens=2)
    made, usage = between(platform, question, generation)  # stored at ingest, new to the replica
    assert sorted(usage.block_ids) == sorted(ids) and dict(usage.blocks_by_tier) == {"store": 8}
    assert made == Counter({("cache_index", "Search"): 1}), made
    made, usage = between(platform, question, generation)  # now in the replica's memory too
    assert dict(usage.blocks_by_tier) == {"memory": 8} and made == Counter({("cache_index", "Search"): 1}), made
    assert sum(made.values()) <= 3  # the target for a question over 8 cached blocks

    by_id = pb.GenerateRequest(question=QUESTION, tenant=TENANT, max_new_tokens=2,
                               context=[pb.ContextBlock(block_id=b) for b in ids])
    made, usage = between(platform, by_id, generation)
    assert dict(usage.blocks_by_tier) == {"memory": 8} and made == Counter(), made

    # cold: another collection's 8 blocks, their KV evicted after ingest
    cold_ids = ingest(generation, "towns-cold", "new")
    index = cache_index_pb2_grpc.CacheIndexServiceStub(channel)
    evicted = index.Evict(cache_index_pb2.EvictRequest(tenant=TENANT, block_ids=cold_ids),
                          metadata=with_key(CACHE_INDEX, admin_key))
    assert evicted.entries == 8
    cold = pb.GenerateRequest(question=QUESTION, collection="towns-cold", top_k=8, tenant=TENANT, max_new_tokens=2)
    made, usage = between(platform, cold, generation)
    assert sorted(usage.block_ids) == sorted(cold_ids) and dict(usage.blocks_by_tier) == {"computed": 8}
    assert made == Counter({("cache_index", "Search"): 1, ("precompute", "Precompute"): 1}), made
    # Precompute stored them again for the other replicas: a lookup finds all 8
    found = index.Lookup(cache_index_pb2.LookupRequest(tenant=TENANT, block_ids=cold_ids,
                                                       model_version=usage.model_version),
                         metadata=with_key(CACHE_INDEX, admin_key))
    assert all(r.hit for r in found.results)


def test_calls_between_deployments_per_ingest(platform, generation):
    for n, word in ((3, "grey"), (8, "blue")):
        documents = [pb.Document(id=town, text=f"The {word} ferry of {town} leaves at {9 + i}.")
                     for i, town in enumerate(TOWNS[:n])]
        before = calls(platform)
        reply = generation.Ingest(pb.IngestRequest(collection=f"ferries-{word}", tenant=TENANT, documents=documents),
                                  metadata=GENERATION)
        made = +(calls(platform) - before)
        assert [d.document_id for d in reply.documents] == TOWNS[:n] and not reply.failed_documents
        assert all(len(d.block_ids) == 1 for d in reply.documents)
        assert made == Counter({("segmentation", "Segment"): n, ("precompute", "Precompute"): 1,
                                ("cache_index", "RegisterBlocks"): 1}), (n, made)
