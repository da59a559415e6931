"""The gRPC proxy's servicers: the five services, plus standard health checking.

Each servicer function registers its service through wire.add_service, whose handlers turn a
request that does not parse into INVALID_ARGUMENT (the generated add_*Servicer_to_server would
leave grpcio to answer UNKNOWN). They run in the proxy's process, so each also installs the
proxy's status for a dead replica there (proxy_status.py; once per process)."""

from __future__ import annotations

from ray.serve.config import gRPCOptions

from blockrag.defaults import GRPC_PORT
from blockrag_services import proxy_status
from blockrag_services.wire import SERVICES, add_service


def add_segmentation_to_server(servicer, server) -> None:
    proxy_status.install()
    add_service(SERVICES["segmentation"], servicer, server)


def add_precompute_to_server(servicer, server) -> None:
    proxy_status.install()
    add_service(SERVICES["precompute"], servicer, server)


def add_cache_index_to_server(servicer, server) -> None:
    proxy_status.install()
    add_service(SERVICES["cache_index"], servicer, server)


def add_generation_to_server(servicer, server) -> None:
    proxy_status.install()
    add_service(SERVICES["generation"], servicer, server)


def add_admin_to_server(servicer, server) -> None:
    proxy_status.install()
    add_service(SERVICES["admin"], servicer, server)


SERVICER_FUNCTIONS = [
    "blockrag_services.grpc_options.add_segmentation_to_server",
    "blockrag_services.grpc_options.add_precompute_to_server",
    "blockrag_services.grpc_options.add_cache_index_to_server",
    "blockrag_services.grpc_options.add_generation_to_server",
    "blockrag_services.grpc_options.add_admin_to_server",
    "blockrag_services.health.add_health_to_server",
    "blockrag_services.server_tls.add_tls_to_server",  # TLS when the platform asks for it
]


def grpc_options(port: int = GRPC_PORT) -> gRPCOptions:
    """The proxy's options; PlatformStartError first where Ray's proxy cannot be patched
    (proxy_status.check), rather than a proxy that fails to start."""
    proxy_status.check()
    return gRPCOptions(port=port, grpc_servicer_functions=SERVICER_FUNCTIONS)
