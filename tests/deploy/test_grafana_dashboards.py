"""deploy/grafana: the committed dashboards are what generate.py builds, are well formed, and query
only metrics the platform exports. (tests/e2e/test_dashboard_queries.py runs every query live.)"""

from __future__ import annotations

import json

import pytest
from fixtures.promql import (
    DASHBOARDS,
    alert_expressions,
    dashboard_expressions,
    exported_names,
    generator,
    metric_names,
    selectors,
    substitute,
)


def _boards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def test_committed_dashboards_are_the_generators():
    built = generator().dashboards()
    committed = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    assert sorted(committed) == sorted(built), "run: .venv/bin/python deploy/grafana/generate.py"
    for name, text in built.items():
        assert committed[name] == text, f"{name} is out of date: run .venv/bin/python deploy/grafana/generate.py"


def test_the_five_dashboards_the_issue_asks_for():
    boards = _boards()
    assert sorted(b["uid"] for b in boards.values()) == [
        "blockrag-cache", "blockrag-distillation", "blockrag-precompute", "blockrag-segmentation", "blockrag-serving"]
    assert len({b["title"] for b in boards.values()}) == len(boards)


@pytest.mark.parametrize("name", sorted(p.name for p in DASHBOARDS.glob("*.json")))
def test_dashboard_structure(name):
    board = _boards()[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert metric_names(variables["tenant"]["query"].removeprefix("label_values(").split(",")[0]) \
        <= exported_names()
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    graphs = [p for p in panels if p["type"] != "row"]
    assert graphs
    for panel in graphs:
        assert panel["title"] and panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        assert all(t["expr"] for t in panel["targets"]), panel["title"]


def test_every_query_reads_only_exported_metrics():
    """A static version of the live test: every metric a panel or alert names is defined in
    blockrag.telemetry (``up`` is Prometheus's own)."""
    exported = exported_names() | {"up"}
    expressions = dashboard_expressions() + alert_expressions()
    assert len(expressions) > 40
    for e in expressions:
        names = metric_names(e.expr)
        assert names, f"{e.source}: no metric found in {e.expr!r}"
        assert names <= exported, f"{e.source}: {sorted(names - exported)} not exported"


def test_the_name_check_can_fail():
    exported = exported_names()
    assert metric_names('sum(rate(blockrag_cache_evictions_total{tier="memory"}[5m]))') - exported \
        == {"blockrag_cache_evictions_total"}


def test_selectors_skip_functions_keywords_label_lists_and_strings():
    expr = ('histogram_quantile(0.95, sum by (tenant, le) (rate(a_bucket{x="y}z", t=~"$tenant"}[$__rate_interval])))'
            ' / on (t) group_left (u) max without (v) (b offset 5m) > 2.5e3 and up{job="j"} == bool 0')
    assert selectors(expr) == ['a_bucket{x="y}z", t=~"$tenant"}', "b", 'up{job="j"}']
    assert substitute(expr, {"$__rate_interval": "5m", "$tenant": ".*"}).count("[5m]") == 1
