"""The gRPC proxy's servicers: the five services, plus standard health checking."""

from __future__ import annotations

from ray.serve.config import gRPCOptions

SERVICER_FUNCTIONS = [
    "blockrag.v1.segmentation_pb2_grpc.add_SegmentationServiceServicer_to_server",
    "blockrag.v1.precompute_pb2_grpc.add_PrecomputeServiceServicer_to_server",
    "blockrag.v1.cache_index_pb2_grpc.add_CacheIndexServiceServicer_to_server",
    "blockrag.v1.generation_pb2_grpc.add_GenerationServiceServicer_to_server",
    "blockrag.v1.admin_pb2_grpc.add_AdminServiceServicer_to_server",
    "blockrag_services.health.add_health_to_server",
]
DEFAULT_GRPC_PORT = 50051  # not Serve's 9000, which MinIO also takes


def grpc_options(port: int = DEFAULT_GRPC_PORT) -> gRPCOptions:
    return gRPCOptions(port=port, grpc_servicer_functions=SERVICER_FUNCTIONS)
