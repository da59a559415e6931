"""Ingest over an S3 server killed for real between its documents (issue 14, item 6: "ingest
reports which documents failed; nothing half-written is visible").

The Generation, Precompute, Segmentation and cache index servicers run in process over one SQLite
index and an rclone S3 server (tests/fixtures/s3_outage), on a tiny random Llama; each document
is its own Precompute call (precompute_batch_tokens: 1). The server is SIGKILLed once the first
document's call has returned: that document is ingested whole and reported; the others are
reported failed with the store's error, and nothing of them is left: no document, no block text
(search finds none), no entry. With the server dead from the start, no document can be written:
UNAVAILABLE, naming the first document. A tenant's precompute quota, admitted per call, ends an
ingest the same way: the documents before it whole, the rest failed with the quota's message.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from types import SimpleNamespace

import grpc
import pytest
from tiny_versions import save_tiny_llama

from blockrag.errors import ObjectStoreError, QuotaExceededError
from blockrag.kvcache.index import block_id_for
from blockrag.v1 import generation_pb2 as pb
from blockrag_services.cache_index.deployment import CacheIndexService
from blockrag_services.errors import status_of
from blockrag_services.generation.deployment import Generation
from blockrag_services.handles import CACHE_INDEX, PRECOMPUTE, SEGMENTATION
from blockrag_services.precompute.deployment import Precompute
from blockrag_services.segmentation.deployment import Segmentation

TENANT = "acme"
# one paragraph each: one block per document under the paragraph segmenter
DOCUMENTS = {
    "harbour": "The harbour office of Tolvik opens at seven and closes at noon; Ada Brenn signs the permits.",
    "ferry": "The ferry to Skarvholm leaves the eastern pier twice a day, at nine and at four o'clock.",
    "lighthouse": "The lighthouse keeper of Orsa lights the lamp at dusk and logs every passing trawler.",
}


class Handle:
    """A deployment handle stand-in: awaits the servicer's method; ``after`` runs once a call to
    ``method`` returned."""

    def __init__(self, target, method: str = "", after=None) -> None:
        self.target, self.method, self.after = target, method, after

    def __getattr__(self, name: str):
        method = getattr(self.target, name)

        async def remote(*args):
            result = await method(*args)
            if name == self.method and self.after is not None:
                self.after()
            return result

        return SimpleNamespace(remote=remote)


@pytest.fixture(autouse=True)
def blockrag_logger():
    """Generation and Precompute hand Serve's log handlers to the blockrag logger (replica_logs),
    which is right in a replica; here, put them back, or later tests capture each record twice."""
    logger = logging.getLogger("blockrag")
    handlers, level = logger.handlers[:], logger.level
    yield
    logger.handlers[:], logger.level = handlers, level


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def platform(tmp_path, tiny_dir, restartable_s3, monkeypatch):
    server = restartable_s3.server
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
    services = []

    def start(**extra):
        made = servicers(tmp_path / f"p{len(services)}", tiny_dir, restartable_s3, extra)
        services.append(made)
        return made

    start.s3 = restartable_s3
    yield start
    for made in services:
        made.close()


def servicers(home, tiny_dir, restartable_s3, extra: dict) -> SimpleNamespace:
    home.mkdir()
    server = restartable_s3.server
    args = {"database_url": f"sqlite:///{home}/index.db",
            "object_store_url": f"s3://faults-{secrets.token_hex(4)}/kv?endpoint={server.endpoint}&secure=false",
            "model": {"model": str(tiny_dir), "device": "cpu"}, "resources": {"torch_threads": 1},
            "segmenter": "paragraph", "precompute_batch_tokens": 1, **extra}
    cache = CacheIndexService.func_or_class(args)
    precompute = Precompute.func_or_class(args, handles={CACHE_INDEX: Handle(cache)})
    kill = SimpleNamespace(armed=False)

    def kill_once() -> None:  # after the first document's Precompute call, when armed
        if kill.armed and restartable_s3.process is not None:
            restartable_s3.kill()

    handles = {CACHE_INDEX: Handle(cache), SEGMENTATION: Handle(Segmentation.func_or_class(args)),
               PRECOMPUTE: Handle(precompute, "Precompute", kill_once)}
    generation = Generation.func_or_class(args, handles=handles)

    def close() -> None:
        generation.blocks.store.close()
        for service in (generation, precompute):
            service.models.close()
        cache.index.close()

    return SimpleNamespace(generation=generation, index=cache.index, kill=kill, s3=restartable_s3, close=close)


def ingest(generation: Generation, documents: dict[str, str]) -> pb.IngestResponse:
    request = pb.IngestRequest(collection="coast", tenant=TENANT,
                               documents=[pb.Document(id=i, text=t) for i, t in documents.items()])
    return asyncio.run(generation.Ingest(request))


def rows(index) -> dict[str, object]:
    """What the index holds: document ids, block texts, KV entries and write intents."""
    with index.engine.begin() as conn:
        query = conn.exec_driver_sql
        return {"documents": sorted(query("SELECT document_id FROM documents").scalars()),
                "blocks": sorted(query("SELECT text FROM blocks").scalars()),
                "entries": query("SELECT count(*) FROM kv_entries").scalar_one(),
                "intents": query("SELECT count(*) FROM kv_writes").scalar_one()}


def found(index, word: str) -> list[str]:
    return [h.text for h in index.search(TENANT, "coast", word, 10)]


def test_s3_killed_after_the_first_document_reports_the_others_failed_and_keeps_nothing_of_them(platform):
    platform = platform()
    platform.kill.armed = True
    reply = ingest(platform.generation, DOCUMENTS)
    assert platform.s3.process is None  # killed for real, after the first document's call

    assert [d.document_id for d in reply.documents] == ["harbour"]
    assert list(reply.documents[0].block_ids) == [block_id_for(TENANT, DOCUMENTS["harbour"])]
    assert reply.computed_blocks == 1
    failed = {d.document_id: d.reason for d in reply.failed_documents}
    assert list(failed) == ["ferry", "lighthouse"]
    assert "cannot reach S3 to write" in failed["ferry"]
    assert failed["lighthouse"] == "not tried: document 'ferry' failed before it"

    # the written document whole; of the failed ones no document, no block text, no entry
    assert rows(platform.index) == {"documents": ["harbour"], "blocks": [DOCUMENTS["harbour"]],
                                    "entries": 1, "intents": 0}
    assert found(platform.index, "Tolvik") == [DOCUMENTS["harbour"]]
    assert found(platform.index, "Skarvholm") == [] and found(platform.index, "trawler") == []

    # once the server is back, the failed documents go in; the first is cached already
    platform.kill.armed = False
    platform.s3.start()
    again = ingest(platform.generation, DOCUMENTS)
    assert [d.document_id for d in again.documents] == list(DOCUMENTS) and not again.failed_documents
    assert again.computed_blocks == 2
    assert found(platform.index, "Skarvholm") == [DOCUMENTS["ferry"]]


def test_s3_dead_from_the_start_fails_unavailable_naming_the_first_document(platform):
    platform = platform()
    platform.s3.kill()
    with pytest.raises(ObjectStoreError) as refused:
        ingest(platform.generation, DOCUMENTS)
    code, message = status_of(refused.value)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert message.startswith("no document was ingested (0 of 3 written): the object store failed on document "
                              "'harbour': cannot reach S3 to write")
    assert rows(platform.index) == {"documents": [], "blocks": [], "entries": 0, "intents": 0}


def test_a_quota_reached_partway_keeps_the_documents_before_it_and_fails_the_rest(platform):
    sizes = {d.document_id: d.block_tokens[0] for d in ingest(platform().generation, DOCUMENTS).documents}
    limit = sizes["harbour"] + sizes["ferry"] - 1  # the first document's call fits, the second's does not
    quoted = platform(quotas={"tenants": {TENANT: {"max_precompute_tokens_per_minute": limit}}})
    reply = ingest(quoted.generation, DOCUMENTS)
    assert [d.document_id for d in reply.documents] == ["harbour"]
    failed = {d.document_id: d.reason for d in reply.failed_documents}
    assert list(failed) == ["ferry", "lighthouse"]
    assert failed["ferry"].startswith(f"tenant 'acme' had {sizes['harbour']} tokens precomputed in the last minute "
                                      f"and these blocks need {sizes['ferry']} more, over its quota of {limit}")
    assert failed["lighthouse"] == "not tried: document 'ferry' failed before it"
    assert rows(quoted.index) == {"documents": ["harbour"], "blocks": [DOCUMENTS["harbour"]], "entries": 1,
                                  "intents": 0}

    with pytest.raises(QuotaExceededError) as refused:  # nothing fits now: the quota's own status
        ingest(quoted.generation, {"ferry": DOCUMENTS["ferry"]})
    code, message = status_of(refused.value)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert message.startswith("no document was ingested (0 of 1 written): a quota was reached on document 'ferry': ")
