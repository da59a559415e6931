"""PlatformOptions: the embedded platform gives every application the shared settings with the
resources of its own service, and its ports default to blockrag.defaults."""

from __future__ import annotations

import pytest

from blockrag import defaults
from blockrag_services.config import Limits, PlatformConfig, Resources, ServiceResources
from blockrag_services.platform import PlatformOptions


def test_ports_and_host_are_the_defaults():
    options = PlatformOptions()
    assert (options.host, options.grpc_port, options.http_port, options.metrics_port) == (
        defaults.LOCAL_HOST, defaults.GRPC_PORT, defaults.HTTP_PORT, defaults.METRICS_PORT)


def test_each_application_gets_its_services_resources():
    resources = ServiceResources(generation=Resources(num_replicas=3, num_cpus=2, torch_threads=2),
                                 admin=Resources(num_cpus=0.5))
    options = PlatformOptions(config=PlatformConfig(limits=Limits(max_context_blocks=5),
                                                    resources=Resources(num_replicas=9)),
                              resources=resources)
    for name in ServiceResources.names():
        config = PlatformConfig.from_args(options.args(name))
        assert config.resources == resources.of(name), name  # not the shared config's
        assert config.limits.max_context_blocks == 5  # the rest is shared
    assert PlatformConfig.from_args(options.args("generation")).resources.threads() == 2
    assert PlatformConfig.from_args(options.args("segmentation")).resources == Resources()


def test_an_unknown_service_is_refused():
    with pytest.raises(KeyError, match="no service 'gateway'"):
        PlatformOptions().args("gateway")


def test_the_builders_deploy_with_their_own_resources():
    from blockrag_services.app import BUILDERS

    options = PlatformOptions(resources=ServiceResources(precompute=Resources(num_replicas=2, num_cpus=1.5,
                                                                              max_ongoing_requests=4)))
    for name, build in BUILDERS.items():
        deployment = build(options.args(name))._bound_deployment  # binds; starts nothing
        expected = options.resources.of(name)
        assert deployment.num_replicas == expected.num_replicas, name
        assert deployment.max_ongoing_requests == expected.max_ongoing_requests, name
        assert deployment.ray_actor_options["num_cpus"] == expected.num_cpus, name
