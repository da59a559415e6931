"""PlatformOptions: the embedded platform gives every application the same settings, each
service's resources among them (each builder deploys with its own), and its ports default to
blockrag.defaults."""

from __future__ import annotations

from blockrag import defaults
from blockrag_services.config import Limits, PlatformConfig, Resources, ServiceResources
from blockrag_services.platform import PlatformOptions


def test_ports_and_host_are_the_defaults():
    options = PlatformOptions()
    assert (options.host, options.grpc_port, options.http_port, options.metrics_port) == (
        defaults.LOCAL_HOST, defaults.GRPC_PORT, defaults.HTTP_PORT, defaults.METRICS_PORT)


def test_every_application_gets_the_same_args():
    resources = ServiceResources(generation=Resources(num_replicas=3, num_cpus=2, torch_threads=2),
                                 admin=Resources(num_cpus=0.5))
    options = PlatformOptions(config=PlatformConfig(limits=Limits(max_context_blocks=5), services=resources))
    config = PlatformConfig.from_args(options.args())
    assert config == options.config and config.resources is None
    for name in ServiceResources.names():
        assert config.resources_of(name) == resources.of(name), name
    assert config.resources_of("generation").threads() == 2
    assert config.resources_of("segmentation") == Resources()


def test_the_builders_deploy_with_their_own_resources():
    from blockrag_services.app import BUILDERS

    services = ServiceResources(precompute=Resources(num_replicas=2, num_cpus=1.5, max_ongoing_requests=4))
    options = PlatformOptions(config=PlatformConfig(services=services))
    for name, build in BUILDERS.items():
        deployment = build(options.args())._bound_deployment  # binds; starts nothing
        expected = services.of(name)
        assert deployment.num_replicas == expected.num_replicas, name
        assert deployment.max_ongoing_requests == expected.max_ongoing_requests, name
        assert deployment.ray_actor_options["num_cpus"] == expected.num_cpus, name
