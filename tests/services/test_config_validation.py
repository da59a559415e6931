"""PlatformConfig's settings are checked once, at load, by type and range: a bad value fails with
a message naming the setting by its path (blockrag_services.setting)."""

from __future__ import annotations

import dataclasses

import pytest

from blockrag.errors import InvalidRequestError
from blockrag_services.config import Distill, Limits, PlatformConfig, Quotas, Resources, ServiceResources
from blockrag_services.setting import SettingError


@pytest.mark.parametrize(("args", "message"), [
    ({"limits": {"max_context_tokens": 0}}, "limits.max_context_tokens: must be >= 1, got 0"),
    ({"limits": {"max_new_tokens": "1024"}}, "limits.max_new_tokens: must be a whole number, got '1024'"),
    ({"limits": {"max_ingest_documents": 10.0}}, "limits.max_ingest_documents: must be a whole number, got 10.0"),
    ({"limits": {"default_top_k": True}}, "limits.default_top_k: must be a whole number, got True"),
    ({"quotas": {"max_stored_bytes": -1}}, "quotas.max_stored_bytes: must be >= 0, got -1"),
    ({"resources": {"num_replicas": 0}}, "resources.num_replicas: must be >= 1, got 0"),
    ({"resources": {"num_cpus": -0.5}}, "resources.num_cpus: must be >= 0, got -0.5"),
    ({"resources": {"num_gpus": -1}}, "resources.num_gpus: must be >= 0 or null, got -1"),
    ({"resources": {"num_gpus": "1"}}, "resources.num_gpus: must be a number or null, got '1'"),
    ({"resources": {"torch_threads": 0}}, "resources.torch_threads: must be >= 1 or null, got 0"),
    ({"distill": {"num_cpus": 0}}, "distill.num_cpus: must be > 0, got 0"),
    ({"distill": {"auto_promote": "yes"}}, "distill.auto_promote: must be true or false, got 'yes'"),
    ({"replica_cache_bytes": -1}, "replica_cache_bytes: must be >= 0, got -1"),
    ({"kv_compression_gate_questions": 1001}, "kv_compression_gate_questions: must be <= 1000, got 1001"),
    ({"kv_compression_max_kl": float("nan")}, "kv_compression_max_kl: must be a finite number, got nan"),
    ({"kv_compression_max_kl": 0}, "kv_compression_max_kl: must be > 0, got 0"),
    ({"segment_granularity": 1.5}, "segment_granularity: must be <= 1, got 1.5"),
    ({"segmenter": "regex"}, "segmenter: must be 'learned' or 'paragraph', got 'regex'"),
    ({"database_url": None}, "database_url: must be a string, got None"),
    ({"question_log": 1}, "question_log: must be true or false, got 1"),
    ({"question_log_retention_days": 0}, "question_log_retention_days: must be > 0, got 0"),
    ({"segment_min_block_tokens": 300}, "segment_min_block_tokens: must be <= segment_max_block_tokens (256), got 300"),
])
def test_a_bad_value_is_named_at_load(args, message):
    with pytest.raises(SettingError) as error:
        PlatformConfig.from_args(args)
    assert str(error.value) == message
    assert isinstance(error.value, InvalidRequestError)  # the services' INVALID_ARGUMENT, the CLIs' one line


def test_the_first_bad_value_of_a_section_is_named():
    with pytest.raises(SettingError) as error:
        PlatformConfig.from_args({"limits": {"max_context_blocks": 0, "max_context_tokens": 0}})
    assert str(error.value) == "limits.max_context_blocks: must be >= 1, got 0"


def test_unknown_keys_are_named_with_the_known_ones():
    with pytest.raises(InvalidRequestError) as error:
        PlatformConfig.from_args({"resources": {"gpus": 1, "cpus": 2}})
    assert str(error.value) == ("unknown setting(s) cpus, gpus in resources; known: max_ongoing_requests, num_cpus, "
                                "num_gpus, num_replicas, torch_threads")


def test_values_at_the_bounds_are_taken():
    config = PlatformConfig.from_args({
        "limits": {"max_context_tokens": 1}, "quotas": {"max_stored_bytes": 0},
        "resources": {"num_cpus": 0, "num_gpus": 0, "torch_threads": 1},
        "kv_compression_gate_questions": 1000, "segment_granularity": 0, "replica_cache_bytes": 0,
        "segment_min_block_tokens": 256, "segment_max_block_tokens": 256})
    assert config.limits.max_context_tokens == 1 and config.resources.num_gpus == 0
    assert config.segment_min_block_tokens == config.segment_max_block_tokens == 256


def test_a_whole_number_is_taken_for_a_number():
    config = PlatformConfig.from_args({"resources": {"num_cpus": 2}, "kv_compression_max_kl": 1})
    assert config.resources.num_cpus == 2.0 and isinstance(config.resources.num_cpus, float)
    assert PlatformConfig.from_args(config.to_args()) == config


def test_a_config_built_in_code_is_checked_too():
    # the CLI builds its config directly, and code replaces fields: neither skips the check
    with pytest.raises(SettingError, match=r"^max_context_tokens: must be >= 1, got -5$"):
        Limits(max_context_tokens=-5)
    with pytest.raises(SettingError, match=r"^num_replicas: must be >= 1, got 0$"):
        dataclasses.replace(Resources(), num_replicas=0)
    with pytest.raises(SettingError, match=r"^examples: must be >= 1, got 0$"):
        Distill(examples=0)
    with pytest.raises(SettingError, match=r"^max_precompute_tokens_per_minute: must be >= 0, got -1$"):
        Quotas(max_precompute_tokens_per_minute=-1)
    with pytest.raises(SettingError, match=r"^auth: must be true or false, got 'no'$"):
        PlatformConfig(auth="no")


def test_every_service_has_resources_of_its_own():
    services = ServiceResources(generation=Resources(num_replicas=2))
    assert ServiceResources.names() == ("segmentation", "precompute", "cache_index", "generation", "admin")
    assert services.of("generation").num_replicas == 2
    assert services.of("admin") == Resources()
    with pytest.raises(KeyError, match="no service 'gen'"):
        services.of("gen")


def test_the_services_are_the_applications():
    from blockrag_services.app import BUILDERS

    assert set(ServiceResources.names()) == set(BUILDERS)
