"""helm/blockrag rendered for each value set: every manifest valid for a current Kubernetes
(kubernetes-validate --strict), every custom resource valid against its CRD, the Serve config equal
to deploy/serve/production.yaml with the chart's documented overrides, the alert rules equal to
deploy/prometheus/alerts.yml, and the wiring between the pieces (ports, selectors, Secrets)."""

from __future__ import annotations

import copy
import json
import re

import kubernetes_validate
import pytest
import yaml
from chart_render import (
    ALERTS,
    EXTERNAL,
    GRAFANA_DASHBOARDS,
    KUBE_VERSION,
    PRODUCTION,
    ROOT,
    VALUE_SETS,
    crd_api_version,
    crd_validator,
    manifests,
    one,
    render,
    serve_config,
)

CUSTOM_KINDS = {"RayService", "PodMonitor", "PrometheusRule"}
PRODUCTION_CONFIG = yaml.safe_load(PRODUCTION.read_text())
GRPC_PORT = PRODUCTION_CONFIG["grpc_options"]["port"]


def _id(m):
    return f"{m['kind']}/{m['metadata']['name']}"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_manifests_are_valid_kubernetes(name):
    rendered = manifests(VALUE_SETS[name])
    assert rendered
    for m in rendered:
        assert m["metadata"].get("name"), m
        if m["kind"] in CUSTOM_KINDS:
            assert m["apiVersion"] == crd_api_version(m["kind"]), _id(m)
            errors = sorted(crd_validator(m["kind"]).iter_errors(m), key=lambda e: list(e.absolute_path))
            assert not errors, f"{_id(m)}: " + "; ".join(
                f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])
        else:
            try:
                kubernetes_validate.validate(m, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{_id(m)}: {'/'.join(map(str, e.path))}: {e.message}")


def test_crd_check_can_fail():
    """The CRD validation refuses a misspelt field and a wrong type (the checks above can fail)."""
    service = copy.deepcopy(one({}, "RayService"))
    service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replica"] = 2
    assert list(crd_validator("RayService").iter_errors(service))
    monitor = copy.deepcopy(one({}, "PodMonitor"))
    monitor["spec"]["podMetricsEndpoints"] = "app-metrics"
    assert list(crd_validator("PodMonitor").iter_errors(monitor))
    with pytest.raises(kubernetes_validate.ValidationError):
        bad = copy.deepcopy(one({}, "Service", "blockrag-grpc"))
        bad["spec"]["ports"][0]["prot"] = 1
        kubernetes_validate.validate(bad, KUBE_VERSION, strict=True)


# -- the Serve config: production.yaml is its one source ------------------------------------------


def test_default_serve_config_is_production_yaml():
    """Release "blockrag" with the in-chart stores: exactly deploy/serve/production.yaml (its URLs name
    blockrag-postgresql and blockrag-minio, the Services this release creates)."""
    assert serve_config({}) == PRODUCTION_CONFIG


def expected_serve_config(overrides):
    """production.yaml with the chart's documented overrides applied to every application's args."""
    config = copy.deepcopy(PRODUCTION_CONFIG)
    for app in config["applications"]:
        overrides(app["name"], app["args"], app)
    return config


def test_external_stores_change_only_the_urls():
    def overrides(_, args, __):
        args["database_url"] = EXTERNAL["externalDatabase"]["url"]
        args["object_store_url"] = ("s3://rag-kv/blocks?endpoint=s3.eu-west-1.amazonaws.com:443&secure=true"
                                    "&region=eu-west-1")

    assert serve_config(EXTERNAL) == expected_serve_config(overrides)


def test_no_gpu_runs_the_model_on_cpu_workers():
    def overrides(_, args, __):
        args["model"].update(device="cpu", dtype="float32")
        for resources in args["services"].values():
            if "num_gpus" in resources:
                resources["num_gpus"] = 0
        args["services"]["generation"]["num_replicas"] = 1

    values = VALUE_SETS["no-gpu"]
    assert serve_config(values) == expected_serve_config(overrides)
    groups = one(values, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["cpu-workers"]
    assert "nvidia.com/gpu" not in yaml.safe_dump(groups)


def test_autoscaling_hands_replicas_to_serve_and_pods_to_the_ray_autoscaler():
    values = VALUE_SETS["autoscaling"]
    scaled = values_default("serve", "autoscaling", "applications")

    def overrides(name, args, app):
        args["services"]["segmentation"]["num_replicas"] = 3
        if name in scaled:
            app["deployments"] = [{"name": DEPLOYMENTS[name], "num_replicas": "auto",
                                   "autoscaling_config": scaled[name]}]

    config = serve_config(values)
    assert config == expected_serve_config(overrides)
    cluster = one(values, "RayService")["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"] == {"idleTimeoutSeconds": 120}
    gpu = next(g for g in cluster["workerGroupSpecs"] if g["groupName"] == "gpu-workers")
    assert (gpu["minReplicas"], gpu["replicas"], gpu["maxReplicas"]) == (1, 2, 8)


# The deployments' names (their classes' names), which the autoscaling override must use.
DEPLOYMENTS = {"cache_index": "CacheIndexService", "segmentation": "Segmentation", "precompute": "Precompute",
               "generation": "Generation", "admin": "Admin"}


def test_deployment_names_are_the_classes():
    for app, cls in DEPLOYMENTS.items():
        source = (ROOT / "services" / "blockrag_services" / app / "deployment.py").read_text()
        assert re.search(rf"@serve\.deployment\s*\nclass {cls}\b", source), (app, cls)


def values_default(*path):
    node = yaml.safe_load((ROOT / "helm" / "blockrag" / "values.yaml").read_text())
    for key in path:
        node = node[key]
    return node


@pytest.mark.parametrize("name", VALUE_SETS)
def test_serve_config_loads_in_ray_and_the_platform(name):
    """What Ray Serve checks on `serve deploy`, and what each application's builder checks."""
    from ray.serve.schema import ServeDeploySchema

    from blockrag_services.config import PlatformConfig

    config = serve_config(VALUE_SETS[name])
    ServeDeploySchema.model_validate(config)
    for app in config["applications"]:
        PlatformConfig.from_args(app["args"])


@pytest.mark.parametrize(("values", "replicas", "gpus"), [
    ({}, {"generation": 2, "precompute": 1, "segmentation": 2}, {"generation": 1, "precompute": 1}),
    ({"serve": {"replicas": {"generation": 5, "admin": 2}}}, {"generation": 5, "admin": 2, "precompute": 1},
     {"generation": 1, "precompute": 1}),
    (VALUE_SETS["no-gpu"], {"generation": 1, "precompute": 1}, {"generation": 0, "precompute": 0}),
    (VALUE_SETS["autoscaling"], {"segmentation": 3, "generation": 2}, {"generation": 1}),
], ids=["default", "replicas", "no-gpu", "autoscaling"])
def test_replicas_and_gpus_reach_each_builder(values, replicas, gpus):
    """What each application's builder deploys with (PlatformConfig.resources_of, app.py), read from the
    rendered serveConfigV2: serve.replicas and gpu.enabled=false reach it, in every application's args
    alike (each carries the whole services section)."""
    from blockrag_services.config import PlatformConfig

    apps = serve_config(values)["applications"]
    for app in apps:
        config = PlatformConfig.from_args(app["args"])
        for name, count in replicas.items():
            assert config.resources_of(name).num_replicas == count, (app["name"], name)
        for name, count in gpus.items():
            assert config.resources_of(name).num_gpus == count, (app["name"], name)
        assert config.resources is None  # no application's own resources to replace its entry
    assert len({json.dumps(app["args"], sort_keys=True) for app in apps}) == 1


def _cpus(quantity) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_replicas_fit_the_workers(name):
    """The Serve replicas' CPUs and GPUs fit the worker pods: at the start without the Ray autoscaler
    (pods = replicas), at the most replicas with it (pods = maxReplicas). The head takes none."""
    values = VALUE_SETS[name]
    cluster = one(values, "RayService")["spec"]["rayClusterConfig"]
    pods = "maxReplicas" if cluster["enableInTreeAutoscaling"] else "replicas"
    have = {"cpu": 0.0, "gpu": 0.0}
    for group in cluster["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        have["cpu"] += group[pods] * _cpus(limits["cpu"])
        have["gpu"] += group[pods] * limits.get("nvidia.com/gpu", 0)
    need = {"cpu": 0.0, "gpu": 0.0}
    for app in serve_config(values)["applications"]:
        r = app["args"]["services"][app["name"]]
        replicas = r["num_replicas"]
        for d in app.get("deployments", []):
            replicas = d["autoscaling_config"]["max_replicas"]
        need["cpu"] += replicas * r["num_cpus"]
        need["gpu"] += replicas * r.get("num_gpus", 0)
    assert need["cpu"] <= have["cpu"] and need["gpu"] <= have["gpu"], (need, have)


def test_model_and_args_reach_every_application():
    config = serve_config(VALUE_SETS["ingress-auth"])
    for app in config["applications"]:
        assert app["args"]["model"] == {"model": "/models/other", "dtype": "bfloat16", "device": "cuda",
                                        "adapter": "none"}
        assert app["args"]["question_log"] is True


# -- wiring --------------------------------------------------------------------------------------


def _pods(values):
    cluster = one(values, "RayService")["spec"]["rayClusterConfig"]
    return {"head": cluster["headGroupSpec"]["template"],
            **{g["groupName"]: g["template"] for g in cluster["workerGroupSpecs"]}}


def _selected(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def test_grpc_service_reaches_the_workers_proxies_and_probes_ask_grpc_health():
    service = one({}, "Service", "blockrag-grpc")
    assert service["spec"]["ports"][0]["port"] == GRPC_PORT
    pods = _pods({})
    selected = [g for g, t in pods.items() if _selected(service["spec"]["selector"], t["metadata"]["labels"])]
    assert selected == ["cpu-workers", "gpu-workers"]  # the head takes no replicas (num-cpus 0)
    assert pods["head"]["spec"]["containers"][0]["name"] == "ray-head"
    for group in selected:
        ray = pods[group]["spec"]["containers"][0]
        assert {"name": "grpc", "containerPort": GRPC_PORT} in ray["ports"]
        assert {"name": "serve", "containerPort": PRODUCTION_CONFIG["http_options"]["port"]} in ray["ports"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert ray[probe]["grpc"] == {"port": GRPC_PORT, "service": ""}


def test_worker_pods_drain_before_they_stop():
    """Each worker pod's preStop hook runs `blockrag drain` on the drain file its Ray processes
    watch, within a termination grace period that leaves the hook its whole wait; the head (no
    replicas: num-cpus 0) is not drained. Off, none of it is rendered."""
    import typer

    from blockrag.cli.app import app
    from blockrag_services.drain import DRAIN_ENV

    pods = _pods({"serve": {"drain": {"enabled": True, "gracePeriodSeconds": 45, "terminationMarginSeconds": 10}}})
    for group in ("cpu-workers", "gpu-workers"):
        spec = pods[group]["spec"]
        ray = spec["containers"][0]
        command = ray["lifecycle"]["preStop"]["exec"]["command"]
        assert command == ["blockrag", "drain", "--grace-period", "45"]
        assert spec["terminationGracePeriodSeconds"] == 55
        assert {"name": DRAIN_ENV, "value": "/var/run/blockrag/drain/draining"} in ray["env"]
        group_command = typer.main.get_command(app)
        ctx = group_command.make_context("blockrag", command[1:], resilient_parsing=False)
        drain = group_command.get_command(ctx, "drain")
        assert drain.make_context("drain", command[2:], parent=ctx).params["grace_period"] == 45.0
    head = pods["head"]["spec"]
    assert "lifecycle" not in head["containers"][0] and "terminationGracePeriodSeconds" not in head
    for spec in (t["spec"] for t in _pods({"serve": {"drain": {"enabled": False, "gracePeriodSeconds": 20,
                                                                    "terminationMarginSeconds": 15}}}).values()):
        assert "terminationGracePeriodSeconds" not in spec and "lifecycle" not in spec["containers"][0]
        assert all(e["name"] != DRAIN_ENV for e in spec["containers"][0]["env"])


def test_gpu_workers_request_gpus_on_gpu_nodes():
    gpu = _pods({})["gpu-workers"]["spec"]
    resources = gpu["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["tolerations"]


def test_pod_monitor_scrapes_every_ray_pods_exporter_as_job_blockrag():
    from blockrag.telemetry.exporter import DEFAULT_METRICS_PORT

    monitor = one({}, "PodMonitor")["spec"]
    for group, template in _pods({}).items():
        labels = template["metadata"]["labels"]
        assert _selected(monitor["selector"]["matchLabels"], labels), group
        assert labels[monitor["jobLabel"]] == "blockrag"  # alerts.yml: up{job="blockrag"}
        sidecar = next(c for c in template["spec"]["containers"] if c["name"] == "metrics")
        assert {"name": monitor["podMetricsEndpoints"][0]["port"], "containerPort": DEFAULT_METRICS_PORT} \
            in sidecar["ports"]
        assert sidecar["command"][:3] == ["blockrag", "metrics", "serve"]
        ray = template["spec"]["containers"][0]
        shared = {m["mountPath"] for m in ray["volumeMounts"]} & {m["mountPath"] for m in sidecar["volumeMounts"]}
        multiproc = {e["name"]: e.get("value") for e in ray["env"]}["PROMETHEUS_MULTIPROC_DIR"]
        assert multiproc in shared


def test_prometheus_rule_is_alerts_yml():
    assert one({}, "PrometheusRule")["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]


def test_grafana_dashboards_are_off_by_default():
    assert not [m for m in manifests({}) if m["kind"] == "ConfigMap"]


def test_grafana_dashboards_are_deploy_grafana_in_configmaps_for_the_sidecar():
    """One ConfigMap per deploy/grafana/dashboards/*.json, its data the file unchanged, labelled
    grafana_dashboard: "1" (and the extra labels)."""
    maps = {m["metadata"]["name"]: m for m in manifests(VALUE_SETS["dashboards"]) if m["kind"] == "ConfigMap"}
    files = sorted(GRAFANA_DASHBOARDS.glob("*.json"))
    assert len(files) == 5
    assert sorted(maps) == sorted(f"blockrag-dashboard-{f.stem.removeprefix('blockrag-')}" for f in files)
    for f in files:
        config_map = maps[f"blockrag-dashboard-{f.stem.removeprefix('blockrag-')}"]
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["labels"]["team"] == "rag"
        assert config_map["data"] == {f.name: f.read_text()}
        assert json.loads(config_map["data"][f.name])["uid"] == f.stem


def _env(container):
    return {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") or e.get("value") for e in container["env"]}


@pytest.mark.parametrize("name", ["default", "external"])
def test_credentials_come_from_secrets(name):
    values = VALUE_SETS[name]
    secrets = {m["metadata"]["name"]: m for m in manifests(values) if m["kind"] == "Secret"}
    if name == "external":
        expected = {"PGPASSWORD": {"name": "rag-db", "key": "pw"},
                    "AWS_ACCESS_KEY_ID": {"name": "rag-s3", "key": "accessKey"},
                    "AWS_SECRET_ACCESS_KEY": {"name": "rag-s3", "key": "secretKey"}}
        assert not [m for m in manifests(values) if m["kind"] == "StatefulSet"]
        assert not secrets  # the existing Secrets are the user's
    else:
        expected = {"PGPASSWORD": {"name": "blockrag-postgresql", "key": "password"},
                    "AWS_ACCESS_KEY_ID": {"name": "blockrag-minio", "key": "rootUser"},
                    "AWS_SECRET_ACCESS_KEY": {"name": "blockrag-minio", "key": "rootPassword"}}
        for ref in expected.values():
            assert ref["key"] in secrets[ref["name"]]["data"]
        assert {m["metadata"]["name"] for m in manifests(values) if m["kind"] == "StatefulSet"} == \
            {"blockrag-postgresql", "blockrag-minio"}
    for template in _pods(values).values():
        env = _env(template["spec"]["containers"][0])
        assert {k: env[k] for k in expected} == expected
    job = one(values, "Job", "blockrag-migrate")
    assert _env(job["spec"]["template"]["spec"]["containers"][0])["PGPASSWORD"] == expected["PGPASSWORD"]


def test_migration_job_is_a_hook_before_upgrades():
    job = one({}, "Job", "blockrag-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "CacheIndex.open" in container["command"][-1]
    assert _env(container)["BLOCKRAG_DATABASE_URL"] == PRODUCTION_CONFIG["applications"][0]["args"]["database_url"]


def test_distillation_schedule_calls_the_admin_cli():
    assert not [m for m in manifests({}) if m["kind"] == "CronJob"]  # off by default
    cron = one(VALUE_SETS["distill"], "CronJob")["spec"]
    assert (cron["schedule"], cron["timeZone"], cron["concurrencyPolicy"]) == ("30 2 * * *", "Europe/Berlin", "Forbid")
    command = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command == ["blockrag-admin", "distill", "start", "--address", f"blockrag-grpc:{GRPC_PORT}",
                       "--tenant", "acme", "--collection", "handbook", "--steps", "200", "--eval-questions", "50",
                       "--set", "lora.rank=8", "--set", "learning_rate=1e-4", "--auto-promote", "--watch"]


def test_distillation_command_parses_in_the_admin_cli():
    """The CronJob's arguments are ones `blockrag-admin distill start` accepts (parsed, not run)."""
    import typer

    from blockrag.cli.admin import app

    command = one(VALUE_SETS["distill"], "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "containers"][0]["command"]
    group = typer.main.get_command(app)
    ctx = group.make_context("blockrag-admin", command[1:], resilient_parsing=False)
    distill = group.get_command(ctx, "distill")
    sub = distill.make_context("distill", command[2:], parent=ctx)
    start = distill.get_command(sub, "start")
    params = start.make_context("start", command[3:], parent=sub).params
    assert (params["address"], params["tenant"], params["steps"], list(params["set_"]), params["auto_promote"]) == \
        (f"blockrag-grpc:{GRPC_PORT}", "acme", 200, ["lora.rank=8", "learning_rate=1e-4"], True)


def test_ingress_and_auth_secrets():
    values = VALUE_SETS["ingress-auth"]
    ingress = one(values, "Ingress")["spec"]
    assert ingress["tls"] == [{"hosts": ["rag.example.com"], "secretName": "blockrag-tls"}]
    backend = ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "blockrag-grpc", "port": {"name": "grpc"}}
    assert one(values, "Secret", "blockrag-tls")["type"] == "kubernetes.io/tls"
    for template in _pods(values).values():
        mounts = template["spec"]["containers"][0]["volumeMounts"]
        assert {"name": "model", "mountPath": "/models", "readOnly": True} in mounts


def test_notes_name_the_grpc_address():
    notes = render({})["blockrag/templates/NOTES.txt"]
    assert f"blockrag-grpc:{GRPC_PORT}" in notes


def test_long_release_names_stay_within_kubernetes_limits():
    import helm_python as helm
    from chart_render import CHART

    with helm.Chart.load(CHART) as chart:
        rendered = chart.render({**VALUE_SETS["distill"], **VALUE_SETS["dashboards"]},
                                name="a-release-name-well-over-forty-characters-long", namespace="x")
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        for m in (d for d in yaml.safe_load_all(text) if d):
            assert len(m["metadata"]["name"]) <= (52 if m["kind"] in ("StatefulSet", "CronJob") else 63), _id(m)
