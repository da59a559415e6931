"""Render helm/blockrag offline (helm-python-sdk: Helm's Go SDK through ctypes, no helm binary)
for the value sets the chart's tests share, and check manifests against Kubernetes and CRD schemas."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "blockrag"
PRODUCTION = ROOT / "deploy" / "serve" / "production.yaml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
GRAFANA_DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
CRDS = Path(__file__).resolve().parent / "crds"
RELEASE, NAMESPACE = "blockrag", "rag"
KUBE_VERSION = "1.35.0"  # a current Kubernetes; kubernetes-validate has schemas up to 1.37

EXTERNAL = {
    "postgresql": {"enabled": False},
    "externalDatabase": {"url": "postgresql+psycopg://rag@db.example.com:5432/rag", "existingSecret": "rag-db",
                         "passwordKey": "pw"},
    "minio": {"enabled": False},
    "externalObjectStore": {"endpoint": "s3.eu-west-1.amazonaws.com:443", "secure": True, "region": "eu-west-1",
                            "existingSecret": "rag-s3"},
    "objectStore": {"bucket": "rag-kv", "prefix": "blocks"},
    "auth": {"adminKey": {"existingSecret": "rag-admin-key"}},  # every credential from the user's Secrets
}
NO_GPU = {
    "gpu": {"enabled": False},
    "ray": {"cpuWorkers": {"replicas": 3, "minReplicas": 3, "maxReplicas": 6,
                           "resources": {"requests": {"cpu": "8", "memory": "32Gi"},
                                         "limits": {"cpu": "8", "memory": "32Gi"}}}},
    "serve": {"replicas": {"generation": 1}},
}
AUTOSCALING = {
    "serve": {"autoscaling": {"enabled": True}, "replicas": {"segmentation": 3}},
    "ray": {"autoscaler": {"enabled": True, "idleTimeoutSeconds": 120}},
    "gpu": {"workers": {"replicas": 2, "minReplicas": 1, "maxReplicas": 8}},
}
DISTILL = {
    "distillation": {"schedule": {"enabled": True, "cron": "30 2 * * *", "timeZone": "Europe/Berlin"},
                     "tenant": "acme", "collection": "handbook", "steps": 200, "evalQuestions": 50,
                     "settings": ["lora.rank=8", "learning_rate=1e-4"], "autoPromote": True},
}
INGRESS_AUTH = {
    "grpc": {"ingress": {"enabled": True, "className": "nginx", "host": "rag.example.com",
                         "annotations": {"nginx.ingress.kubernetes.io/backend-protocol": "GRPC"}}},
    "tls": {"create": True, "cert": "-----BEGIN CERTIFICATE-----\n...", "key": "-----BEGIN PRIVATE KEY-----\n..."},
    "auth": {"adminKey": {"existingSecret": "ops-admin-key", "secretKey": "key", "tenant": "ops"}},
    "serve": {"model": {"model": "/models/other", "adapter": "none"}, "args": {"question_log": True},
              "modelVolume": {"source": {"persistentVolumeClaim": {"claimName": "models", "readOnly": True}}}},
}
DASHBOARDS = {"monitoring": {"grafanaDashboards": {"enabled": True, "labels": {"team": "rag"}}}}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {}, "external": EXTERNAL, "no-gpu": NO_GPU, "autoscaling": AUTOSCALING, "distill": DISTILL,
    "ingress-auth": INGRESS_AUTH, "dashboards": DASHBOARDS,
}


@functools.lru_cache(maxsize=None)
def _render(values_json: str) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(json.loads(values_json), name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(values: dict[str, Any]) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would print them."""
    return _render(json.dumps(values, sort_keys=True))


def manifests(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders for ``values`` (NOTES.txt left out)."""
    out = []
    for path, text in sorted(render(values).items()):
        if path.endswith("NOTES.txt"):
            continue
        out.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return out


def one(values: dict[str, Any], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [m for m in manifests(values) if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, rendered {len(found)}"
    return found[0]


def serve_config(values: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(one(values, "RayService")["spec"]["serveConfigV2"])


@functools.lru_cache(maxsize=None)
def crd_validator(kind: str) -> jsonschema.Validator:
    """A validator of a custom resource, from its CRD's openAPIV3Schema (tests/helm/crds), with
    unknown fields refused wherever the CRD does not say it preserves them."""
    for path in CRDS.glob("*.json"):
        crd = json.loads(path.read_text())
        if crd["kind"] == kind:
            return jsonschema.Draft202012Validator(_closed(copy.deepcopy(crd["openAPIV3Schema"])))
    raise LookupError(f"no CRD schema for {kind} in {CRDS}")


def crd_api_version(kind: str) -> str:
    for path in CRDS.glob("*.json"):
        crd = json.loads(path.read_text())
        if crd["kind"] == kind:
            return f"{crd['group']}/{crd['version']}"
    raise LookupError(kind)


def _closed(schema: Any) -> Any:
    if isinstance(schema, dict):
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        for value in schema.values():
            _closed(value)
    elif isinstance(schema, list):
        for value in schema:
            _closed(value)
    return schema
