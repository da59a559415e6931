"""The port's contract for requests that are not what they claim (issue 14, item 5), without Ray:
bytes that do not parse as the method's request type are INVALID_ARGUMENT (grpcio said UNKNOWN,
the code of a crash), and a call routed to the wrong application is INVALID_ARGUMENT naming the
right one (Serve said INTERNAL, with a Ray stack in the details). The running platform is fuzzed
in tests/fuzz."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from blockrag.v1 import generation_pb2, segmentation_pb2
from blockrag_services.admin.deployment import Admin
from blockrag_services.cache_index.deployment import CacheIndexService
from blockrag_services.errors import StatusSet, unary
from blockrag_services.generation.deployment import Generation
from blockrag_services.precompute.deployment import Precompute
from blockrag_services.routing import OneApplication
from blockrag_services.segmentation.deployment import Segmentation
from blockrag_services.wire import SERVICES, MalformedRequest, add_service, parse_request

DEPLOYMENTS = {"admin": Admin, "cache_index": CacheIndexService, "generation": Generation, "precompute": Precompute,
               "segmentation": Segmentation}


class Segmenter(OneApplication):
    """A segmentation deployment that answers one segment, as the proxy calls it."""

    application = "segmentation"

    @unary("segmentation", segmentation_pb2.SegmentResponse)
    async def Segment(self, request: segmentation_pb2.SegmentRequest) -> segmentation_pb2.SegmentResponse:
        return segmentation_pb2.SegmentResponse(blocks=[segmentation_pb2.Segment(text=request.text)])


class Context:
    """What a servicer method sees of a gRPC call."""

    def __init__(self) -> None:
        self.code, self.details = None, ""

    def set_code(self, code) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def invocation_metadata(self):
        return ()


def test_bytes_that_do_not_parse_become_a_malformed_request():
    parse = parse_request(generation_pb2.IngestRequest)
    assert parse(b"") == generation_pb2.IngestRequest()
    assert parse(generation_pb2.IngestRequest(collection="c").SerializeToString()).collection == "c"
    for data in (b"\xff", b"\x08", b"\x0a\x02\xff\xfe", b"\x80" * 11):
        malformed = parse(data)
        assert isinstance(malformed, MalformedRequest) and malformed.type_name == "blockrag.v1.IngestRequest"
        assert "not a valid blockrag.v1.IngestRequest" in str(malformed.error())


def test_over_grpc_malformed_bytes_are_invalid_argument_and_good_ones_served():
    async def main():
        server = grpc.aio.server()
        add_service(SERVICES["segmentation"], Segmenter(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                raw = channel.unary_unary("/blockrag.v1.SegmentationService/Segment")  # bytes as they are
                good = await raw(segmentation_pb2.SegmentRequest(text="One.").SerializeToString())
                assert segmentation_pb2.SegmentResponse.FromString(good).blocks[0].text == "One."
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await raw(b"\x0a\x02\xff\xfe")  # a string field that is not UTF-8
                return refused.value
        finally:
            await server.stop(None)

    error = asyncio.run(main())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "not a valid blockrag.v1.SegmentRequest" in error.details() and "Unexpected" not in error.details()


def test_a_method_of_another_service_is_refused_naming_its_application():
    segmenter, context = Segmenter(), Context()
    reply = asyncio.run(segmenter.Ingest(generation_pb2.IngestRequest(), context))
    assert reply == generation_pb2.IngestResponse() and context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert context.details == ("blockrag.v1.GenerationService.Ingest is served by the application 'generation', "
                               "not 'segmentation': send the metadata application: generation")

    async def stream(context):
        async for _ in segmenter.Generate(generation_pb2.GenerateRequest(question="q"), context):
            pass

    context = Context()
    with pytest.raises(StatusSet):
        asyncio.run(stream(context))
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT and "application: generation" in context.details
    assert not hasattr(segmenter, "reconfigure") and not hasattr(segmenter, "Nope")  # what Serve probes for


def test_a_malformed_request_is_refused_before_its_access_is_checked():
    context = Context()
    asyncio.run(Segmenter().Segment(MalformedRequest("blockrag.v1.SegmentRequest", "Wire format was corrupt"), context))
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid" in context.details


@pytest.mark.parametrize("app", sorted(SERVICES))
def test_every_deployment_serves_its_service_and_refuses_the_others(app):
    deployment = DEPLOYMENTS[app].func_or_class
    assert issubclass(deployment, OneApplication) and deployment.application == app
    for method in SERVICES[app].methods:
        assert method.name in vars(deployment), f"{app} lacks {method.name}"
