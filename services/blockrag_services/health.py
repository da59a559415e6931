"""Standard gRPC health checking (grpc.health.v1) on Ray Serve's gRPC proxy.

The proxy routes every registered service to an application chosen by the `application`
metadata, which a Kubernetes gRPC probe cannot send. So this servicer function registers the
health service as a passthrough service: it is answered by the proxy itself. Statuses follow
the Serve applications (polled every 2 s): the service names "blockrag.v1.GenerationService",
... are SERVING while their application is RUNNING, and "" (the whole platform: what a probe
without a service name asks) while all five are. A request whose bytes do not parse is
INVALID_ARGUMENT (wire.parse_request), as on the other services.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2

from blockrag_services.drain import draining
from blockrag_services.handles import APPLICATIONS
from blockrag_services.wire import SERVICES, MalformedRequest, add_service

log = logging.getLogger("blockrag.services.health")

SERVICE_NAMES = {app: service.full_name for app, service in SERVICES.items()}
POLL_SECONDS = 2.0
_tasks: list[asyncio.Task] = []  # keep the watcher alive


def add_health_to_server(_servicer, server) -> None:
    """A servicer function for gRPCOptions.grpc_servicer_functions (the proxy passes a mock
    servicer, which this ignores)."""
    if hasattr(server, "add_passthrough_service"):
        server.add_passthrough_service(health.SERVICE_NAME)
    servicer = _HealthServicer()
    add_service(health_pb2.DESCRIPTOR.services_by_name["Health"], servicer, server)
    _tasks.append(asyncio.get_running_loop().create_task(_watch(servicer)))


class _HealthServicer(health.aio.HealthServicer):
    """grpcio's, refusing requests that do not parse."""

    async def Check(self, request, context):
        if isinstance(request, MalformedRequest):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request.error()))
        return await super().Check(request, context)

    async def Watch(self, request, context):
        if isinstance(request, MalformedRequest):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request.error()))
        return await super().Watch(request, context)


async def _statuses() -> dict[str, bool]:
    from ray import serve

    status = await asyncio.to_thread(serve.status)
    return {app: app in status.applications and status.applications[app].status == "RUNNING"
            for app in APPLICATIONS}


async def _watch(servicer) -> None:
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    await servicer.set("", not_serving)
    while True:
        try:
            running = await _statuses()
        except Exception as e:  # noqa: BLE001 - the controller may be restarting
            log.warning("could not read the Serve status: %s", e)
            running = {app: False for app in APPLICATIONS}
        if draining():  # shutting down: probes take this instance out of rotation (drain.py)
            running = {app: False for app in APPLICATIONS}
        for app, ok in running.items():
            await servicer.set(SERVICE_NAMES[app], serving if ok else not_serving)
        await servicer.set("", serving if all(running.values()) else not_serving)
        await asyncio.sleep(POLL_SECONDS)
