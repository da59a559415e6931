"""A real local platform (`blockrag up`, tests/fixtures/platform.py) with a per-tenant quota on
precompute tokens, reached over gRPC:

- quotas before work: an Ingest or a Generate whose new blocks would pass the quota gets
  RESOURCE_EXHAUSTED with the quota's figures, and the index and the object store gain nothing
  (rows and files counted);
- shutdown: SIGTERM while an answer is streaming. The ready file goes first, new calls get
  UNAVAILABLE (the platform is shutting down) and grpc.health NOT_SERVING, the stream in flight
  ends with all its tokens and its usage, and the process exits 0.

One platform for the module (its start is most of the time); the SIGTERM test runs last and
stops it.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time

import grpc
import pytest
from fixtures.platform import start_platform, stop_platform
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blockrag.v1 import generation_pb2 as pb
from blockrag.v1 import generation_pb2_grpc

GENERATION = (("application", "generation"),)
QUOTA_TOKENS = 300  # per tenant and minute
STREAM_TOKENS = 64
SMALL = "The harbour office of Tolvik opens at seven and closes at noon."
LARGE = " ".join(f"Pier {i} of the harbour takes boats of up to {10 + i} metres from May to October."
                 for i in range(40))  # ~800 tokens: over the quota on its own


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    running = start_platform(tmp_path_factory.mktemp("drain"), "--quota-precompute-tokens", str(QUOTA_TOKENS),
                             "--grace-period", "90")
    yield running
    if running.process.poll() is None:  # the SIGTERM test did not run or failed midway
        stop_platform(running)


@pytest.fixture(scope="module")
def generation(platform):
    with grpc.insecure_channel(platform.grpc) as channel:
        yield generation_pb2_grpc.GenerationServiceStub(channel)


def stored(platform) -> tuple[int, int, int, int]:
    """(blocks, documents, KV entries, objects): what a refused request must not add."""
    with sqlite3.connect(platform.state_dir / "index.db") as db:
        rows = tuple(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("blocks", "documents",
                                                                                    "kv_entries"))
    return (*rows, sum(1 for p in (platform.state_dir / "kv").rglob("*") if p.is_file()))


def test_over_quota_is_resource_exhausted_and_nothing_is_written(platform, generation):
    small = generation.Ingest(pb.IngestRequest(collection="harbour", documents=[pb.Document(id="small", text=SMALL)]),
                              metadata=GENERATION)
    assert small.computed_blocks == 1
    before = stored(platform)
    assert before == (1, 1, 1, 1)
    with pytest.raises(grpc.RpcError) as refused:
        generation.Ingest(pb.IngestRequest(collection="harbour", documents=[pb.Document(id="large", text=LARGE)]),
                          metadata=GENERATION)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "tokens of precompute, more than the whole quota of tenant 'default' (300 tokens per minute)" in \
        refused.value.details()
    with pytest.raises(grpc.RpcError) as refused:  # a question over new text: generation's miss path
        list(generation.Generate(pb.GenerateRequest(question="Which pier takes the longest boats?",
                                                    context=[pb.ContextBlock(text=LARGE[:1500])]),
                                 metadata=GENERATION))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "quota of tenant 'default' (300 tokens per minute)" in refused.value.details()
    assert stored(platform) == before


def test_sigterm_drains_the_stream_in_flight(platform, generation):
    block_id = generation.Ingest(pb.IngestRequest(collection="harbour", documents=[pb.Document(
        id="small", text=SMALL)]), metadata=GENERATION).documents[0].block_ids[0]
    ready = platform.state_dir / "ready.json"
    assert ready.exists()
    replies: list[tuple[float, pb.GenerateResponse]] = []
    failure: list[grpc.RpcError] = []
    first = threading.Event()

    def stream() -> None:
        # temperature 2 draws nearly uniformly: the end-of-text token (1 of 49152) all but never comes,
        # so the answer runs its STREAM_TOKENS (seeded: the same draws every run)
        request = pb.GenerateRequest(question="When does the office open?", context=[pb.ContextBlock(
            block_id=block_id)], max_new_tokens=STREAM_TOKENS, temperature=2.0, seed=7)
        try:
            for reply in generation.Generate(request, metadata=GENERATION, timeout=120):
                replies.append((time.monotonic(), reply))
                first.set()
        except grpc.RpcError as e:
            failure.append(e)
            first.set()

    streaming = threading.Thread(target=stream)
    streaming.start()
    assert first.wait(60) and not failure
    platform.process.send_signal(signal.SIGTERM)

    # a new call is refused as soon as the platform drains (one admitted just before is an empty
    # question: INVALID_ARGUMENT at once, not another stream)
    deadline = time.monotonic() + 20
    refused = None
    while refused is None and time.monotonic() < deadline:
        try:
            list(generation.Generate(pb.GenerateRequest(question="", collection="harbour"), metadata=GENERATION,
                                     timeout=10))
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                refused = (time.monotonic(), e)
            else:
                assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
                time.sleep(0.1)
    assert refused is not None, "no UNAVAILABLE within 20 s of SIGTERM"
    assert not ready.exists()  # removed before draining began
    assert "the platform is shutting down and takes no new requests" in refused[1].details()
    with grpc.insecure_channel(platform.grpc) as channel:  # the health service follows within its poll (2 s)
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 10
        while (status := health.Check(health_pb2.HealthCheckRequest(), timeout=5).status) == \
                health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING

    streaming.join(120)
    assert not failure, failure[0].details()
    last_at, last = replies[-1]
    assert last.done and last.usage.completion_tokens == STREAM_TOKENS
    assert last_at > refused[0]  # the stream was still in flight while new calls were refused
    assert platform.process.wait(90) == 0
    log = platform.log.read_text(errors="replace")
    assert "No request in flight." in log and "Stopped." in log, platform.log_tail()
