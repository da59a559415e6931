"""The gRPC port's services as the proxy registers them, and requests as they come off the wire.

Serve's proxy parses every request with its method handler's deserializer before routing it to
a replica, and grpcio answers bytes that do not parse with UNKNOWN ("Unexpected <class
DecodeError>..."), the same code as a crash. The handlers registered here parse without raising:
bytes that are not the method's request type arrive as a MalformedRequest, which every servicer
method (errors.unary / errors.streaming) and the health service refuse as INVALID_ARGUMENT, a
client's error like any other bad argument.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from blockrag.errors import InvalidRequestError
from blockrag.v1 import admin_pb2, cache_index_pb2, generation_pb2, precompute_pb2, segmentation_pb2

# application (the `application` metadata that routes a call) -> the proto service it serves
SERVICES: dict[str, ServiceDescriptor] = {
    "segmentation": segmentation_pb2.DESCRIPTOR.services_by_name["SegmentationService"],
    "precompute": precompute_pb2.DESCRIPTOR.services_by_name["PrecomputeService"],
    "cache_index": cache_index_pb2.DESCRIPTOR.services_by_name["CacheIndexService"],
    "generation": generation_pb2.DESCRIPTOR.services_by_name["GenerationService"],
    "admin": admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
}
# method name -> (its application, the method): the proxy hands a replica the method's name only
RPCS: dict[str, tuple[str, MethodDescriptor]] = {
    m.name: (app, m) for app, service in SERVICES.items() for m in service.methods}
if len(RPCS) != sum(len(s.methods) for s in SERVICES.values()):  # a new proto method reusing a name
    raise RuntimeError("RPC names must be unique across the services: the proxy hands replicas the name only")


@dataclass(frozen=True)
class MalformedRequest:
    """What arrives instead of a request whose bytes do not parse as its type."""

    type_name: str  # e.g. blockrag.v1.IngestRequest
    reason: str  # the parser's

    def error(self) -> InvalidRequestError:
        return InvalidRequestError(f"the request is not a valid {self.type_name} ({self.reason}); "
                                   f"send the message the method takes, serialized")


def parse_request(message_class: type[Message]) -> Callable[[bytes], Message | MalformedRequest]:
    """A request deserializer that never raises."""
    type_name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Message | MalformedRequest:
        try:
            return message_class.FromString(data)
        except DecodeError as e:
            reason = str(e).split(": ", 1)[-1] if ": " in str(e) else "the bytes do not parse"
            return MalformedRequest(type_name, reason)

    return parse


def add_service(service: ServiceDescriptor, servicer, server) -> None:
    """Register `servicer`'s methods of `service` on `server`, as the generated
    add_*Servicer_to_server does, with requests parsed by parse_request."""
    handlers = {}
    for method in service.methods:
        make = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(getattr(servicer, method.name),
                                     request_deserializer=parse_request(GetMessageClass(method.input_type)),
                                     response_serializer=GetMessageClass(method.output_type).SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    if hasattr(server, "add_registered_method_handlers"):
        server.add_registered_method_handlers(service.full_name, handlers)
