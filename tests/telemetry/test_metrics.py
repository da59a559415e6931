"""Metrics recorded by several processes reach a real Prometheus through one exporter, exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase
from fixtures.prometheus import PrometheusServer, prometheus_factory, values  # noqa: F401

from blockrag.telemetry import ALL_METRICS, TokenStreamTimer, metric_names, metrics, observe_blocks
from blockrag.telemetry.exporter import (
    MetricsExporter,
    mark_process_dead,
    prepare_multiprocess_dir,
    start_exporter,
)

# One replica process: replays the given observations through the public helpers.
WORKER = """
import json, sys
from blockrag import telemetry
from blockrag.telemetry import metrics

assert telemetry.multiprocess_active(), "PROMETHEUS_MULTIPROC_DIR was not honoured"
spec = json.loads(sys.argv[1])
for times in spec["streams"]:  # clock readings: start, one per token, finish
    clock = iter(times).__next__
    timer = telemetry.TokenStreamTimer("t", clock=clock)
    for _ in times[1:-1]:
        timer.token()
    timer.finish()
telemetry.observe_prompt("t", *spec["prompt"])
for tier, blocks, tokens in spec["blocks"]:
    telemetry.observe_blocks("t", tier, blocks, tokens)
for code in spec["codes"]:
    telemetry.observe_request("generation", "Generate", code)
telemetry.observe_precompute_batch(*spec["precompute"])
telemetry.set_replica_cache("generation", *spec["cache"])
telemetry.set_replica_cache("generation", *spec["cache"])  # the same eviction count again: no new ones
for counts in spec["tier_lookups"]:  # cumulative (hits, misses) by tier, as MemoryTiers.tier_stats() counts
    telemetry.set_replica_tier_lookups("generation", {tier: tuple(c) for tier, c in counts.items()})
with telemetry.time_segmentation():
    pass
"""

WORKER_A = {
    "streams": [[0.0, 0.03, 0.04, 0.05, 0.06], [1.0, 1.04, 1.06]],  # TTFT 0.03, 0.04
    "prompt": [100, 60],
    "blocks": [["memory", 2, 60], ["computed", 1, 40]],
    "codes": ["OK", "OK"],
    "precompute": [3000, 1.0],  # 3000 tok/s
    "cache": [100, 1, 2],  # bytes, entries, evictions so far
    # a GPU replica: reported three times; the last report's device hits are lower (a new tier)
    "tier_lookups": [{"device": [3, 5], "pinned": [1, 4]}, {"device": [4, 6], "pinned": [1, 4]},
                     {"device": [2, 1], "pinned": [2, 5]}],
}
WORKER_B = {
    "streams": [[0.0, 0.045, 0.05]],  # TTFT 0.045
    "prompt": [250, 0],
    "blocks": [["store", 3, 250]],
    "codes": ["UNAVAILABLE"],
    "precompute": [1000, 0.5],  # 2000 tok/s, written last
    "cache": [200, 2, 5],
    "tier_lookups": [{"host": [7, 2]}, {"host": [7, 2]}],  # a CPU replica
}


@dataclass
class Scraped:
    prometheus: PrometheusServer
    multiproc_dir: Path
    pids: list[int]

    def value(self, promql: str) -> float:
        """The single value of ``promql``."""
        result = values(self.prometheus.query(promql))
        assert len(result) == 1, f"{promql}: {result}"
        return result[0]


def _run_worker(multiproc_dir: Path, spec: dict) -> int:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir)}
    proc = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(spec)], env=env)
    assert proc.wait(timeout=30) == 0
    return proc.pid


@pytest.fixture(scope="module")
def scraped(tmp_path_factory, prometheus_factory) -> Iterator[Scraped]:  # noqa: F811
    multiproc_dir = prepare_multiprocess_dir(tmp_path_factory.mktemp("multiproc"))
    # In sequence, so that B's precompute throughput is the most recent one.
    pids = [_run_worker(multiproc_dir, WORKER_A), _run_worker(multiproc_dir, WORKER_B)]
    exporter, port = start_exporter("127.0.0.1", 0, multiproc_dir)
    try:
        prometheus = prometheus_factory([f"127.0.0.1:{port}"])
        prometheus.wait_for(
            'blockrag_time_to_first_token_seconds_count{tenant="t"}', lambda r: values(r) == [3.0]
        )
        yield Scraped(prometheus, multiproc_dir, pids)
    finally:
        exporter.stop()


def test_latency_histograms_sum_over_processes(scraped):
    assert scraped.value('blockrag_time_to_first_token_seconds_count{tenant="t"}') == 3
    assert scraped.value('blockrag_time_to_first_token_seconds_sum{tenant="t"}') == pytest.approx(0.115)
    assert scraped.value('blockrag_inter_token_latency_seconds_count{tenant="t"}') == 2
    assert scraped.value('blockrag_e2e_request_latency_seconds_count{tenant="t"}') == 3
    assert scraped.value("blockrag_segmentation_latency_seconds_count") == 2
    # All three TTFTs lie in the (0.025, 0.05] bucket: the median interpolates to its middle.
    median = scraped.value(
        'histogram_quantile(0.5, sum by (le) (blockrag_time_to_first_token_seconds_bucket{tenant="t"}))'
    )
    assert median == pytest.approx(0.0375)


def test_token_and_block_counters(scraped):
    assert scraped.value("sum(blockrag_prompt_tokens_total)") == 350
    assert scraped.value('blockrag_prompt_tokens_cached_total{tenant="t"}') == 60
    for tier, blocks, tokens in [("memory", 2, 60), ("store", 3, 250), ("computed", 1, 40)]:
        assert scraped.value(f'blockrag_blocks_total{{tenant="t",tier="{tier}"}}') == blocks
        assert scraped.value(f'blockrag_block_tokens_total{{tenant="t",tier="{tier}"}}') == tokens


def test_request_counters(scraped):
    assert scraped.value('sum(blockrag_requests_total{service="generation",method="Generate"})') == 3
    assert scraped.value('blockrag_request_errors_total{code="UNAVAILABLE"}') == 1
    assert scraped.prometheus.query('blockrag_request_errors_total{code="OK"}') == []


def test_precompute_metrics(scraped):
    assert scraped.value("blockrag_precompute_tokens_total") == 4000
    assert scraped.value("blockrag_precompute_batch_seconds_count") == 2
    assert scraped.value("blockrag_precompute_batch_tokens_sum") == 4000
    # batches of 3000 and 1000 tokens
    assert [scraped.value(f'blockrag_precompute_batch_tokens_bucket{{le="{le}"}}') for le in ("512.0", "1024.0", "4096.0")] \
        == [0, 1, 2]
    # mostrecent: the value written last (worker B), not the sum (5000) or the max (3000).
    assert scraped.value("blockrag_precompute_tokens_per_second") == 2000


def test_live_gauges_drop_dead_processes(scraped):
    query = 'blockrag_replica_cache_bytes{service="generation"}'
    assert scraped.value(query) == 300
    assert scraped.value('blockrag_replica_cache_entries{service="generation"}') == 3
    # each worker reported its count twice: counted once (2 + 5)
    assert scraped.value('blockrag_replica_cache_evictions_total{service="generation"}') == 7
    # Exited processes still count until marked dead; counters keep their share.
    mark_process_dead(scraped.pids[0], scraped.multiproc_dir)
    scraped.prometheus.wait_for(query, lambda r: values(r) == [200.0])
    assert scraped.value("sum(blockrag_prompt_tokens_total)") == 350


def test_memory_tier_lookups_count_each_report_once(scraped):
    # the differences between reports, summed over processes; a count that went down (a new tier)
    # counts whole: device hits 4 then 2 more, misses 6 then 1 more
    expected = {("device", "hit"): 6, ("device", "miss"): 7, ("pinned", "hit"): 2, ("pinned", "miss"): 5,
                ("host", "hit"): 7, ("host", "miss"): 2}
    for (tier, result), count in expected.items():
        selector = f'service="generation",tier="{tier}",result="{result}"'
        assert scraped.value(f"blockrag_replica_cache_tier_lookups_total{{{selector}}}") == count
    rate = ('sum by (tier) (blockrag_replica_cache_tier_lookups_total{result="hit"}) / sum by (tier) '
            "(blockrag_replica_cache_tier_lookups_total)")
    assert {r["metric"]["tier"]: float(r["value"][1]) for r in scraped.prometheus.query(rate)} == \
        pytest.approx({"device": 6 / 13, "pinned": 2 / 7, "host": 7 / 9})


def test_every_metric_is_named_blockrag():
    module_metrics = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    assert set(map(id, module_metrics)) == set(map(id, ALL_METRICS)), "a metric is missing from ALL_METRICS"
    names = metric_names()
    assert len(names) == len(set(names)) == len(ALL_METRICS)
    assert all(name.startswith("blockrag_") for name in names), names
    assert "blockrag_prompt_tokens_total" in names
    assert "blockrag_time_to_first_token_seconds" in names


def test_exporter_on_port_zero_reports_its_port(tmp_path):
    exporter, port = start_exporter("127.0.0.1", 0, prepare_multiprocess_dir(tmp_path / "mp"))
    try:
        assert port > 0 and exporter.port == port
        with urllib.request.urlopen(exporter.url, timeout=5) as resp:
            assert resp.status == 200
    finally:
        exporter.stop()
    with pytest.raises(RuntimeError):
        exporter.port


def test_exporter_needs_a_prepared_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare_multiprocess_dir"):
        MetricsExporter(tmp_path / "missing", port=0).start()


def test_prepare_clears_stale_metric_files_only(tmp_path):
    (tmp_path / "counter_123.db").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("kept")
    assert prepare_multiprocess_dir(tmp_path) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_helpers_reject_bad_input():
    with pytest.raises(ValueError, match="tier"):
        observe_blocks("t", "disk", 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cached_tokens"):
        metrics.observe_prompt("t", 10, 11)
    timer = TokenStreamTimer("t", clock=iter([0.0, 2.0, 3.0]).__next__)
    assert timer.finish() == 2.0
    assert timer.finish() == 3.0  # recorded once, reported again
