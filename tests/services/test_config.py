"""PlatformConfig from Serve `args`, and the Serve config files that carry them."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from blockrag.errors import InvalidRequestError
from blockrag.model_runtime import ModelSpec
from blockrag_services.config import Limits, PlatformConfig, Resources, ServiceResources

ROOT = Path(__file__).resolve().parents[2]
SERVE_CONFIGS = {name: ROOT / "deploy" / "serve" / f"{name}.yaml" for name in ("local", "production")}
APPLICATIONS = {"segmentation", "precompute", "cache_index", "generation", "admin"}


def test_no_args_is_the_default():
    assert PlatformConfig.from_args(None) == PlatformConfig()
    assert PlatformConfig.from_args({}) == PlatformConfig()


def test_nested_args_build_typed_settings():
    config = PlatformConfig.from_args({
        "database_url": "postgresql+psycopg://u@h/db",
        "model": {"model": "/models/x", "dtype": "bfloat16", "device": "cuda"},
        "limits": {"max_context_blocks": 3},
        "resources": {"num_replicas": 2, "num_gpus": 1},
        "segment_granularity": 0.5,
    })
    assert config.database_url == "postgresql+psycopg://u@h/db"
    assert config.database == "postgresql+psycopg://u@h/db"
    assert config.model == ModelSpec(model="/models/x", dtype="bfloat16", device="cuda")
    assert config.limits == Limits(max_context_blocks=3)
    assert config.limits.max_new_tokens == Limits().max_new_tokens
    assert config.resources == Resources(num_replicas=2, num_gpus=1)
    assert config.segment_granularity == 0.5


def test_a_null_nested_section_takes_its_defaults():
    assert PlatformConfig.from_args({"model": None, "limits": None}) == PlatformConfig()


def test_to_args_round_trips():
    config = PlatformConfig(object_store_url="s3://b/p?endpoint=h:9000", model=ModelSpec(model="m", dtype="float16"),
                            limits=Limits(max_block_tokens=77), resources=Resources(num_cpus=2.5, num_gpus=0.5),
                            replica_cache_bytes=123, precompute_batch_tokens=99)
    args = config.to_args()
    assert args["model"] == {"model": "m", "dtype": "float16", "device": "auto", "adapter": "default"}
    assert args["limits"]["max_block_tokens"] == 77
    assert args["resources"]["num_gpus"] == 0.5
    assert PlatformConfig.from_args(args) == config
    assert PlatformConfig.from_args(PlatformConfig().to_args()) == PlatformConfig()


def test_empty_stores_default_under_blockrag_home(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOCKRAG_HOME", str(tmp_path))
    config = PlatformConfig()
    assert config.database == f"sqlite:///{tmp_path / 'platform' / 'index.db'}"
    assert config.object_store == str(tmp_path / "platform" / "kv")


@pytest.mark.parametrize(("args", "named", "where"), [
    ({"databse_url": "x"}, "databse_url", "args"),
    ({"model": {"name": "x"}}, "name", "model"),
    ({"limits": {"max_context_block": 1}}, "max_context_block", "limits"),
    ({"resources": {"gpus": 1}}, "gpus", "resources"),
])
def test_unknown_keys_are_named(args, named, where):
    with pytest.raises(InvalidRequestError, match=rf"unknown setting\(s\) {named} in {where}"):
        PlatformConfig.from_args(args)


def test_every_unknown_key_is_named():
    with pytest.raises(InvalidRequestError) as error:
        PlatformConfig.from_args({"zeta": 1, "alpha": 2, "limits": {}})
    assert "alpha, zeta" in str(error.value)


def load_serve_config(name: str) -> dict:
    with SERVE_CONFIGS[name].open() as f:
        return yaml.safe_load(f)


def configs_by_application(name: str) -> dict[str, PlatformConfig]:
    return {app["name"]: PlatformConfig.from_args(app["args"]) for app in load_serve_config(name)["applications"]}


@pytest.fixture(scope="module")
def builders():
    from blockrag_services.app import BUILDERS

    return BUILDERS


@pytest.mark.parametrize("name", sorted(SERVE_CONFIGS))
def test_serve_config_is_valid(name, builders):
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    from blockrag_services.grpc_options import SERVICER_FUNCTIONS

    config = load_serve_config(name)
    schema = ServeDeploySchema.model_validate(config)  # Ray 2.60's schema is pydantic v2
    assert {app.name for app in schema.applications} == APPLICATIONS
    assert len(schema.applications) == len(APPLICATIONS)
    assert schema.grpc_options.grpc_servicer_functions == SERVICER_FUNCTIONS
    for path in SERVICER_FUNCTIONS:
        module, _, attr = path.rpartition(".")
        assert callable(getattr(importlib.import_module(module), attr)), path
    for app in schema.applications:
        module, _, attr = app.import_path.partition(":")
        builder = getattr(importlib.import_module(module), attr)
        assert builder is builders[app.name]
        assert isinstance(PlatformConfig.from_args(app.args), PlatformConfig)
        assert isinstance(builder(app.args), Application)  # binds; starts nothing


def test_production_runs_the_model_on_gpus():
    apps = configs_by_application("production")
    for name in ("precompute", "generation"):
        assert apps[name].resources_of(name).num_gpus >= 1, name
        assert apps[name].model.device == "cuda"
    # the same model and stores everywhere (the YAML anchor)
    shared = {(c.model, c.database_url, c.object_store_url) for c in apps.values()}
    assert len(shared) == 1
    assert apps["precompute"].precompute_batch_tokens == 16384
    assert apps["generation"].precompute_batch_tokens == 16384  # its Ingest calls fill Precompute's batches


def test_local_config_is_the_embedded_default():
    apps = configs_by_application("local")
    for name, config in apps.items():
        assert config == PlatformConfig(), name  # every application the same args, resources included
        assert config.resources_of(name) == ServiceResources().of(name), name  # what `blockrag up` gives it
        assert config.resources_of(name).num_gpus is None  # decided by the cluster at deploy time


def test_production_shares_one_services_section():
    # every application the same args (the Helm chart sets num_gpus and num_replicas in `services`)
    apps = configs_by_application("production")
    assert len({repr(c) for c in apps.values()}) == 1
    config = apps["generation"]
    assert config.resources is None
    assert [config.resources_of(n).num_replicas for n in ServiceResources.names()] == [2, 1, 2, 2, 1]
    assert [config.resources_of(n).num_gpus for n in ServiceResources.names()] == [None, 1, None, 1, None]


def test_services_resources_are_each_applications_own():
    config = PlatformConfig.from_args({"services": {"generation": {"num_replicas": 3, "num_gpus": 1},
                                                    "admin": None}})
    assert config.services == ServiceResources(generation=Resources(num_replicas=3, num_gpus=1))
    assert config.resources is None
    assert config.resources_of("generation") == Resources(num_replicas=3, num_gpus=1)
    assert config.resources_of("admin") == Resources()
    # an application's own resources replace its entry
    own = PlatformConfig.from_args({**config.to_args(), "resources": {"num_cpus": 2}})
    assert own.resources_of("generation") == own.resources_of("admin") == Resources(num_cpus=2)
    assert PlatformConfig.from_args(config.to_args()) == config
    with pytest.raises(KeyError, match="no service 'gateway'"):
        own.resources_of("gateway")


@pytest.mark.parametrize(("services", "message"), [
    ({"gen": {}}, r"unknown setting\(s\) gen in services"),
    ({"admin": {"gpus": 1}}, r"unknown setting\(s\) gpus in services\.admin"),
    ({"admin": {"num_replicas": 0}}, r"services\.admin\.num_replicas: must be >= 1, got 0"),
    ({"admin": 2}, r"services\.admin must be a mapping"),
    ([1], r"services must be a mapping"),
])
def test_bad_services_are_named(services, message):
    with pytest.raises(InvalidRequestError, match=message):
        PlatformConfig.from_args({"services": services})


def test_each_builder_deploys_with_its_services_resources(builders):
    services = {name: {"num_replicas": i + 1, "num_cpus": 0.5 + i, "max_ongoing_requests": 10 + i}
                for i, name in enumerate(ServiceResources.names())}
    for name, build in builders.items():
        deployment = build({"services": services})._bound_deployment  # binds; starts nothing
        expected = services[name]
        assert deployment.num_replicas == expected["num_replicas"], name
        assert deployment.max_ongoing_requests == expected["max_ongoing_requests"], name
        assert deployment.ray_actor_options["num_cpus"] == expected["num_cpus"], name


@pytest.mark.parametrize("name", ["exact_first_passage", "question_log", "auth"])
def test_switches_take_booleans_only(name):
    # a YAML "false" is a non-empty string: taken as a switch it would turn the setting on
    with pytest.raises(InvalidRequestError) as error:
        PlatformConfig.from_args({name: "false"})
    assert str(error.value) == f"{name}: must be true or false, got 'false'"
    assert getattr(PlatformConfig.from_args({name: False}), name) is False


def test_the_first_passage_is_read_exactly_by_default():
    assert PlatformConfig().exact_first_passage is True
