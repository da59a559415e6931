"""helm lint --strict of helm/blockrag for every value set the tests render (helm-python-sdk)."""

from __future__ import annotations

import helm_python as helm
import pytest
from chart_render import CHART, KUBE_VERSION, NAMESPACE, VALUE_SETS

WARNING = 2  # lint severities: 1 info, 2 warning, 3 error; --strict fails on warnings


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_strict(name):
    report = helm.lint(CHART, VALUE_SETS[name], strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= WARNING]
    assert not report["errors"] and not problems, report


def test_lint_reports_a_broken_value():
    """The check can fail: a value the schema refuses is a lint error."""
    report = helm.lint(CHART, {"gpu": {"workers": {"gpusPerPod": 0}}}, strict=True)
    assert any(m["severity"] >= WARNING for m in report["messages"]) or report["errors"]


def test_chart_files_are_the_deploy_files():
    """The chart reads its Serve config and alert rules through links to deploy/: one source each."""
    root = CHART.parents[1]
    assert (CHART / "files" / "serve.yaml").resolve() == root / "deploy" / "serve" / "production.yaml"
    assert (CHART / "files" / "alerts.yml").resolve() == root / "deploy" / "prometheus" / "alerts.yml"
    assert (CHART / "files" / "dashboards").resolve() == root / "deploy" / "grafana" / "dashboards"


def test_packaged_chart_carries_the_linked_files(tmp_path):
    """`helm package` follows the links: an archive renders the same RayService without the repository."""
    archive = helm.package(CHART, destination=tmp_path)
    with helm.Chart.load_archive(open(archive, "rb").read()) as chart:
        packaged = chart.render({}, name="blockrag", namespace=NAMESPACE)
    with helm.Chart.load(CHART) as chart:
        local = chart.render({}, name="blockrag", namespace=NAMESPACE)
    key = "blockrag/templates/rayservice.yaml"
    assert packaged[key] == local[key]
    dashboards = {"monitoring": {"grafanaDashboards": {"enabled": True}}}
    with helm.Chart.load_archive(open(archive, "rb").read()) as chart:
        packaged = chart.render(dashboards, name="blockrag", namespace=NAMESPACE)
    with helm.Chart.load(CHART) as chart:
        local = chart.render(dashboards, name="blockrag", namespace=NAMESPACE)
    key = "blockrag/templates/grafana-dashboards.yaml"
    assert packaged[key] == local[key] and local[key].count("kind: ConfigMap") == 5
