"""values.schema.json accepts the chart's value sets and refuses bad values, naming the key."""

from __future__ import annotations

import helm_python as helm
import pytest
from chart_render import CHART, VALUE_SETS


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as c:
        yield c


@pytest.mark.parametrize("name", VALUE_SETS)
def test_accepts(chart, name):
    chart.validate_schema(VALUE_SETS[name])


BAD = {
    "unknown top-level key": ({"replicaCount": 3}, "replicaCount"),
    "typo in a nested key": ({"gpu": {"worker": {}}}, "worker"),
    "negative worker replicas": ({"ray": {"cpuWorkers": {"replicas": -1}}}, "/ray/cpuWorkers/replicas"),
    "GPU pods without GPUs": ({"gpu": {"workers": {"gpusPerPod": 0}}}, "gpusPerPod"),
    "bad pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    "replicas of an unknown application": ({"serve": {"replicas": {"generator": 2}}}, "generator"),
    "zero replicas": ({"serve": {"replicas": {"generation": 0}}}, "/serve/replicas/generation"),
    "model dtype": ({"serve": {"model": {"dtype": "fp8"}}}, "dtype"),
    "store URL in args": ({"serve": {"args": {"database_url": "sqlite://"}}}, "/serve/args"),
    # one application's own resources would replace its entry of `services`, where serve.replicas goes
    "resources in args": ({"serve": {"args": {"resources": {"num_replicas": 2}}}}, "/serve/args"),
    "external DB without URL": ({"postgresql": {"enabled": False}}, "externalDatabase"),
    "password in the DSN": ({"postgresql": {"enabled": False}, "externalDatabase": {
        "url": "postgresql+psycopg://u:secret@db:5432/x", "existingSecret": "s"}}, "/externalDatabase/url"),
    "external S3 without endpoint": ({"minio": {"enabled": False}}, "externalObjectStore"),
    "S3 endpoint with a scheme": ({"minio": {"enabled": False}, "externalObjectStore": {
        "endpoint": "https://s3.example.com", "existingSecret": "s"}}, "/externalObjectStore/endpoint"),
    "bucket name": ({"objectStore": {"bucket": "Blocks_KV"}}, "/objectStore/bucket"),
    "cron with four fields": ({"distillation": {"schedule": {"enabled": True, "cron": "0 3 * *"}}}, "cron"),
    "distillation setting without =": ({"distillation": {"settings": ["lora.rank"]}}, "/distillation/settings/0"),
    "negative steps": ({"distillation": {"steps": -5}}, "/distillation/steps"),
    "service type": ({"grpc": {"service": {"type": "Ingress"}}}, "type"),
    "TLS Secret without a key": ({"tls": {"create": True, "cert": "PEM"}}, "/tls/key"),
    "admin key Secret name": ({"auth": {"adminKey": {"existingSecret": "Admin_Key"}}}, "/auth/adminKey/existingSecret"),
    "admin key of no tenant": ({"auth": {"adminKey": {"tenant": ""}}}, "/auth/adminKey/tenant"),
    "admin key given inline": ({"auth": {"adminKey": {"key": "brk_..."}}}, "key"),
    "ray start params as numbers": ({"ray": {"head": {"rayStartParams": {"num-cpus": 0}}}}, "num-cpus"),
    "Ray version": ({"ray": {"version": "latest"}}, "/ray/version"),
}


@pytest.mark.parametrize("case", BAD)
def test_refuses(chart, case):
    values, where = BAD[case]
    with pytest.raises(helm.HelmValuesError) as raised:
        chart.validate_schema(values)
    assert where in str(raised.value)


def test_render_refuses_what_the_schema_refuses(chart):
    with pytest.raises(helm.HelmValuesError, match="gpusPerPod"):
        chart.render({"gpu": {"workers": {"gpusPerPod": 0}}}, name="blockrag")
