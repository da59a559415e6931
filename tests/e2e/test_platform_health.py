"""Standard gRPC health checking and reflection on the platform's one gRPC port, no metadata."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

SERVICES = ["", "blockrag.v1.SegmentationService", "blockrag.v1.PrecomputeService",
            "blockrag.v1.CacheIndexService", "blockrag.v1.GenerationService", "blockrag.v1.AdminService"]


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_is_serving(channel, service):
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert set(SERVICES[1:]) | {"grpc.health.v1.Health"} <= names
