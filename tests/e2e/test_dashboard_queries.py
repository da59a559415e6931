"""Every PromQL expression the project ships, run against a real Prometheus that scraped the platform.

Traffic in two rounds (each: ingest one document, ask twice, one Generate and two admin requests
that fail): the first round makes every series exist, the second makes every counter grow after
Prometheus has seen it, so that rate() and histogram_quantile() have something to compute. Between
them a small distillation run of the test's tenant trains on the first round's collection (through
Ray Train, as tests/e2e/test_platform_distill.py's) and its version is promoted: the distillation
dashboard's training, evaluation and version panels need a run, nothing is set for them before.

- Dashboard panels (deploy/grafana/dashboards): each expression, with Grafana's variables
  substituted, must return at least one series with a finite value. A metric nobody exports gives
  no series: the test fails.
- Alert rules (deploy/prometheus/alerts.yml) compare against a threshold, so without a fault they
  rightly return nothing. For them the test checks that the expression is valid PromQL, that every
  metric it names is in Prometheus's list of names (/api/v1/label/__name__/values), and that each
  of its selectors returns series.
"""

from __future__ import annotations

import json
import math
import urllib.request

import grpc
import pytest
from calls import ADMIN, GENERATION, ask
from fixtures.prometheus import PrometheusServer, values
from fixtures.promql import (
    Expression,
    alert_expressions,
    dashboard_expressions,
    generator,
    metric_names,
    selectors,
    substitute,
)

from blockrag.samples import sample_documents
from blockrag.v1 import admin_pb2, admin_pb2_grpc
from blockrag.v1 import generation_pb2 as pb

# a small run of the default model: 2 steps of one short example (test_platform_distill.py's SMALL)
SMALL_RUN = dict(steps=2, examples=4, eval_questions=2, config_json=json.dumps(
    {"examples_per_step": 1, "max_example_tokens": 384, "eval_examples": 0, "checkpoint_every": 1,
     "lora": {"rank": 4}}))
RUN_TIMEOUT_S = 900
TENANT = "dashboards-test"  # its own tenant: its blocks are new, so ingest runs segmentation and precompute
COLLECTION = "dashboards"
ASKS_PER_ROUND = 2


def _fails(call) -> None:
    with pytest.raises(grpc.RpcError) as error:
        call()
    assert error.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), error.value


def _round(generation, admin, document: tuple[str, str]) -> None:
    name, text = document
    generation.Ingest(pb.IngestRequest(collection=COLLECTION, tenant=TENANT, documents=[pb.Document(id=name, text=text)]),
                      metadata=GENERATION)
    for _ in range(ASKS_PER_ROUND):
        ask(generation, pb.GenerateRequest(question="What is this about?", collection=COLLECTION, tenant=TENANT,
                                           max_new_tokens=4))
    _fails(lambda: ask(generation, pb.GenerateRequest(question="q?", tenant=TENANT,
                                                      context=[pb.ContextBlock(block_id="blk_nope")])))
    _fails(lambda: admin.StartDistillation(admin_pb2.StartDistillationRequest(tenant=TENANT, steps=-1),
                                           metadata=ADMIN))
    # last in the round: once Prometheus has scraped it, it has scraped the whole round
    _fails(lambda: admin.PromoteModelVersion(admin_pb2.PromoteModelVersionRequest(version="0" * 64), metadata=ADMIN))


def _distill_and_promote(admin) -> None:
    """A small run of TENANT over its collection to its end, and its version promoted."""
    run = admin.StartDistillation(admin_pb2.StartDistillationRequest(tenant=TENANT, collection=COLLECTION,
                                                                     **SMALL_RUN), metadata=ADMIN).run
    ended = None
    for reply in admin.WatchDistillation(admin_pb2.WatchDistillationRequest(run_id=run.run_id), metadata=ADMIN,
                                         timeout=RUN_TIMEOUT_S):
        ended = reply.run
    assert ended is not None and ended.status == "succeeded", ended
    admin.PromoteModelVersion(admin_pb2.PromoteModelVersionRequest(version=ended.version_id), metadata=ADMIN)


def _names(prometheus: PrometheusServer) -> set[str]:
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/label/__name__/values", timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return set(body["data"])


def _problem(prometheus: PrometheusServer, names: set[str], e: Expression, variables: dict[str, str]) -> str | None:
    """Why a dashboard expression fails the check, or None."""
    missing = metric_names(e.expr) - names
    if missing:
        return f"{e.source}: no series named {sorted(missing)} in Prometheus"
    expr = substitute(e.expr, variables)
    result = prometheus.query(expr)
    if not any(math.isfinite(v) for v in values(result)):
        return f"{e.source}: {expr!r} returned {result or 'no series'}"
    return None


def test_every_dashboard_query_and_alert_selector_has_data(platform, generation, channel, prometheus_factory):
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    prometheus = prometheus_factory([platform.metrics])
    prometheus.wait_for('up{job="blockrag"}', lambda r: values(r) == [1.0], timeout=30)
    documents = list(sample_documents().items())
    # the rounds' failed promotions (the run's promotion succeeds: not counted here)
    promotes = 'sum(blockrag_requests_total{service="admin", method="PromoteModelVersion", code!="OK"})'
    before = sum(values(prometheus.query(promotes)))
    for n in (1, 2):
        if n == 2:
            _distill_and_promote(admin)
        _round(generation, admin, documents[n - 1])
        prometheus.wait_for(promotes, lambda r, n=n: values(r) == [before + n], timeout=30)
    names = _names(prometheus)
    variables = generator().VARIABLES

    dashboards = dashboard_expressions()
    assert len(dashboards) > 40
    problems = [p for e in dashboards if (p := _problem(prometheus, names, e, variables))]
    assert not problems, "\n".join(problems)

    # the check can fail: a panel on a metric nobody exports
    bogus = Expression("bogus panel", 'sum(rate(blockrag_cache_evictions_total{tier="memory"}[$__rate_interval]))')
    assert "no series named ['blockrag_cache_evictions_total']" in _problem(prometheus, names, bogus, variables)

    for e in alert_expressions():
        prometheus.query(e.expr)  # valid PromQL (the fixture raises on an error status)
        assert metric_names(e.expr) <= names, f"{e.source}: {sorted(metric_names(e.expr) - names)} not in Prometheus"
        for selector in selectors(e.expr):
            assert prometheus.query(selector), f"{e.source}: {selector} has no series"
