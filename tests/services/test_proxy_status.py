"""The gRPC proxy's status for a call whose replica died (proxy_status.py): installed by the
servicer functions in the process that runs them, pinned to the Ray it was tested on. The
platform test that kills a replica under a streaming call is
tests/faults/test_platform_faults.py."""

from __future__ import annotations

import asyncio
from unittest.mock import Mock

import grpc
import pytest
import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError
from ray.serve._private import proxy

from blockrag.errors import PlatformStartError
from blockrag_services import proxy_status
from blockrag_services.errors import status_of
from blockrag_services.grpc_options import SERVICER_FUNCTIONS, add_generation_to_server, grpc_options

RAY_ORIGINAL = proxy.get_grpc_response_status


@pytest.fixture
def fresh_proxy(monkeypatch):
    """Ray's proxy module as Ray ships it; restored after the test."""
    monkeypatch.setattr(proxy, "get_grpc_response_status", RAY_ORIGINAL)
    return proxy


def dead(kind=ActorDiedError) -> BaseException:
    """The error a call gets when its replica's actor died; with the text a real one carries
    (the actor's id, pid and node) where the class takes it."""
    if kind is ActorUnavailableError:
        return kind("The actor died. actor_id: 8f1e0c7a pid: 4242 ip: 10.0.0.7", b"\x01" * 16)
    return kind()


def test_ray_itself_answers_a_dead_replica_internal_with_its_text(fresh_proxy):
    # the defect the patch exists for: if Ray fixes it, the patch can go
    status = fresh_proxy.get_grpc_response_status(dead(ActorUnavailableError), 30.0, "r1")
    assert status.code == grpc.StatusCode.INTERNAL and "actor_id" in status.message


@pytest.mark.parametrize("kind", [ActorDiedError, ActorUnavailableError])
def test_installed_a_dead_replica_is_unavailable_with_a_short_message(fresh_proxy, kind):
    proxy_status.install()
    status = fresh_proxy.get_grpc_response_status(dead(kind), 30.0, "r1")
    assert status.code == grpc.StatusCode.UNAVAILABLE and status.is_error
    assert status.message == proxy_status.DEAD_REPLICA
    assert "actor" not in status.message.lower() and "4242" not in status.message


def test_installed_other_errors_keep_rays_mapping(fresh_proxy):
    proxy_status.install()
    mapped = fresh_proxy.get_grpc_response_status
    assert mapped(TimeoutError(), 5.0, "r1").code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert mapped(asyncio.CancelledError(), 5.0, "r1").code == grpc.StatusCode.CANCELLED
    assert mapped(ValueError("x"), 5.0, "r1").code == grpc.StatusCode.INTERNAL
    # an error the replica's own code raised (Ray's class subclasses the cause's) is not a death
    raised = RayTaskError("Generate", "trace", ActorDiedError()).as_instanceof_cause()
    assert isinstance(raised, ActorDiedError)
    assert mapped(raised, 5.0, "r1").code == grpc.StatusCode.INTERNAL


def test_installed_once_per_process(fresh_proxy):
    proxy_status.install()
    first = fresh_proxy.get_grpc_response_status
    proxy_status.install()
    assert fresh_proxy.get_grpc_response_status is first
    assert first.blockrag_original is RAY_ORIGINAL


def test_the_servicer_functions_install_it_in_the_proxys_process(fresh_proxy):
    # the proxy calls every function of gRPCOptions.grpc_servicer_functions in its own process
    assert "blockrag_services.grpc_options.add_generation_to_server" in SERVICER_FUNCTIONS

    async def register():
        add_generation_to_server(Mock(), grpc.aio.server())  # the proxy passes a Mock too

    asyncio.run(register())
    assert fresh_proxy.get_grpc_response_status(dead(), None, "r1").code == grpc.StatusCode.UNAVAILABLE


def test_another_ray_version_fails_at_start(fresh_proxy, monkeypatch):
    monkeypatch.setattr(ray, "__version__", "2.61.0")
    with pytest.raises(PlatformStartError, match="Ray 2.61.0 is installed.*proxy_status.py"):
        grpc_options()
    with pytest.raises(PlatformStartError):
        proxy_status.install()
    assert fresh_proxy.get_grpc_response_status is RAY_ORIGINAL


def test_a_proxy_without_the_function_fails_at_start(fresh_proxy, monkeypatch):
    monkeypatch.delattr(fresh_proxy, "get_grpc_response_status")
    with pytest.raises(PlatformStartError, match="has no ray.serve._private.proxy.get_grpc_response_status"):
        grpc_options()


def test_a_function_with_other_parameters_fails_at_start(fresh_proxy, monkeypatch):
    monkeypatch.setattr(fresh_proxy, "get_grpc_response_status", lambda exc, request_id: None)
    with pytest.raises(PlatformStartError, match="INTERNAL"):
        proxy_status.install()


def test_a_dead_replica_behind_a_handle_is_unavailable():
    # a servicer's call through a handle to a deployment whose replica died (errors.status_of)
    code, message = status_of(dead(ActorUnavailableError))
    assert code == grpc.StatusCode.UNAVAILABLE and message == proxy_status.DEAD_REPLICA
