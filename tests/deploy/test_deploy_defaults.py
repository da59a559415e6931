"""The files that must restate a default of blockrag.defaults (the Serve configs, the Helm chart)
state the same value, and no Python source restates one: they cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from blockrag import defaults

ROOT = Path(__file__).resolve().parents[2]
SERVE = {name: ROOT / "deploy" / "serve" / f"{name}.yaml" for name in ("local", "production")}
CHART = ROOT / "helm" / "blockrag"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("name", sorted(SERVE))
def test_serve_configs_use_the_default_ports(name):
    config = load(SERVE[name])
    assert config["grpc_options"]["port"] == defaults.GRPC_PORT
    assert config["http_options"]["port"] == defaults.HTTP_PORT


def test_the_local_serve_config_listens_where_blockrag_up_does():
    assert load(SERVE["local"])["http_options"]["host"] == defaults.LOCAL_HOST


def test_the_default_ports_keep_off_serves_and_minios():
    from ray.serve._private.constants import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT

    # Serve's gRPC default (9000) is MinIO's port, which production.yaml's object store uses
    assert defaults.GRPC_PORT != DEFAULT_GRPC_PORT and defaults.HTTP_PORT != DEFAULT_HTTP_PORT
    assert "minio:9000" in load(SERVE["production"])["applications"][0]["args"]["object_store_url"]
    assert len({defaults.GRPC_PORT, defaults.HTTP_PORT, defaults.METRICS_PORT, 9000}) == 4
    assert defaults.ADDRESS == f"{defaults.LOCAL_HOST}:{defaults.GRPC_PORT}"


def test_the_chart_serves_metrics_on_the_default_port():
    # the chart's sidecar runs `blockrag metrics serve --port <serve.metricsPort>`; its gRPC and HTTP
    # ports are production.yaml's (files/serve.yaml), compared above
    assert load(CHART / "values.yaml")["serve"]["metricsPort"] == defaults.METRICS_PORT
    assert (CHART / "files" / "serve.yaml").resolve() == SERVE["production"].resolve()


def test_the_charts_ray_head_ports_are_rays_own():
    from ray._private.ray_constants import DEFAULT_DASHBOARD_PORT, DEFAULT_PORT

    template = (CHART / "templates" / "rayservice.yaml").read_text()
    ports = dict(re.findall(r"\{name: ([\w-]+), containerPort: (\d+)\}", template))
    assert int(ports["dashboard"]) == DEFAULT_DASHBOARD_PORT
    assert int(ports["gcs-server"]) == DEFAULT_PORT


def test_cache_maintenance_runs_at_the_default_interval():
    from blockrag.kvcache.maintenance import CacheMaintenance

    assert CacheMaintenance().interval_s == defaults.CACHE_MAINTENANCE_INTERVAL_S > 0


# a default port written in any other Python source would be a second owner
RESTATED = {str(defaults.GRPC_PORT), str(defaults.HTTP_PORT), str(defaults.METRICS_PORT)}


def test_no_python_source_restates_a_default_port():
    offenders = []
    for path in [*(ROOT / "libs" / "blockrag").rglob("*.py"), *(ROOT / "services").rglob("*.py")]:
        if path.name == "defaults.py" or "/v1/" in path.as_posix():  # the owner; generated protos
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if any(re.search(rf"(?<![\w.]){port}(?![\w.])", line) for port in RESTATED):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "import the port from blockrag.defaults instead:\n" + "\n".join(offenders)
