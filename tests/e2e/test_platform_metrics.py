"""A real Prometheus scrapes the platform's metrics address and counts the asks made here."""

from __future__ import annotations

from calls import GENERATION, ask
from fixtures.prometheus import values

from blockrag.samples import sample_documents
from blockrag.v1 import generation_pb2 as pb

TENANT = "metrics-test"  # a tenant of its own: the counts below are exactly this test's asks
ASKS = 3


def test_prometheus_scrapes_time_to_first_token(platform, generation, prometheus_factory):
    name, text = next(iter(sample_documents().items()))
    generation.Ingest(pb.IngestRequest(collection="m", tenant=TENANT, documents=[pb.Document(id=name, text=text)]),
                      metadata=GENERATION)
    for _ in range(ASKS):
        ask(generation, pb.GenerateRequest(question="What is this about?", collection="m", tenant=TENANT,
                                           max_new_tokens=3))
    prometheus = prometheus_factory([platform.metrics])
    selector = f'{{tenant="{TENANT}"}}'
    count = prometheus.wait_for(f"blockrag_time_to_first_token_seconds_count{selector}",
                                lambda r: values(r) == [ASKS], timeout=60)
    assert values(count) == [ASKS]
    assert values(prometheus.query(f"blockrag_e2e_request_latency_seconds_count{selector}")) == [ASKS]
    p50 = values(prometheus.query(
        f"histogram_quantile(0.5, sum by (le) (blockrag_time_to_first_token_seconds_bucket{selector}))"))
    assert len(p50) == 1 and 0 < p50[0] < 60
    # the first ask read the blocks from the store, the next two from the replica's memory
    blocks = {r["metric"]["tier"]: float(r["value"][1])
              for r in prometheus.query(f"blockrag_blocks_total{selector}")}
    assert blocks["memory"] == 2 * blocks["store"] > 0 and blocks["computed"] == 0
    generate_ok = prometheus.query('blockrag_requests_total{service="generation",method="Generate",code="OK"}')
    assert values(generate_ok)[0] >= ASKS
