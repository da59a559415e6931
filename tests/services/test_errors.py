"""Typed errors to gRPC status codes, and the servicer decorators that apply them."""

from __future__ import annotations

import asyncio
import inspect
import logging

import grpc
import pytest

from blockrag.errors import (
    BlockRAGError,
    CacheIndexError,
    EngineCorrectnessError,
    InvalidBlockError,
    InvalidRequestError,
    KVIntegrityError,
    LimitExceededError,
    ModelLoadError,
    NotFoundError,
    ObjectStoreError,
    ServiceUnavailableError,
    UnsupportedModelError,
)
from blockrag_services.errors import StatusSet, status_of, streaming, unary, unwrap

Code = grpc.StatusCode


@pytest.mark.parametrize(("error", "code"), [
    (NotFoundError("block b1 not found"), Code.NOT_FOUND),
    (InvalidRequestError("empty question"), Code.INVALID_ARGUMENT),
    (InvalidBlockError("empty block"), Code.INVALID_ARGUMENT),
    (LimitExceededError("65 blocks > max_context_blocks 64"), Code.INVALID_ARGUMENT),
    (EngineCorrectnessError("gate failed"), Code.UNAVAILABLE),
    (ModelLoadError("no such model"), Code.UNAVAILABLE),
    (UnsupportedModelError("no rotary"), Code.UNAVAILABLE),
    (ServiceUnavailableError("model not loaded"), Code.UNAVAILABLE),
    (ObjectStoreError("s3 unreachable"), Code.UNAVAILABLE),
    (CacheIndexError("db locked"), Code.UNAVAILABLE),
    (KVIntegrityError("sha mismatch"), Code.DATA_LOSS),
    (BlockRAGError("other"), Code.FAILED_PRECONDITION),
    (NotImplementedError("distillation is not implemented yet"), Code.UNIMPLEMENTED),
])
def test_status_of_typed_errors(error, code):
    assert status_of(error) == (code, str(error))


def test_unexpected_errors_are_internal_without_their_detail(caplog):
    with caplog.at_level(logging.ERROR, logger="blockrag.services"):
        code, message = status_of(RuntimeError("secret detail"))
    assert code == Code.INTERNAL
    assert "secret detail" not in message
    assert message.startswith("internal error (id ")
    request_id = message.split("(id ")[1].split(")")[0]
    assert len(request_id) == 12
    # the log keeps the trace, under the id the client got (a platform started earlier in the
    # session may have added a handler that copies records into the capture: any copy will do)
    records = [r for r in caplog.records if request_id in r.getMessage()]
    assert records and all(isinstance(r.exc_info[1], RuntimeError) for r in records)


class RayTaskError(Exception):
    """Stands in for ray.exceptions.RayTaskError: the user exception under `.cause`."""

    def __init__(self, cause):
        super().__init__(f"task failed: {cause}")
        self.cause = cause


def test_unwrap():
    inner = NotFoundError("collection c")
    assert unwrap(RayTaskError(inner)) is inner
    plain = ValueError("x")
    assert unwrap(plain) is plain
    not_an_error = RayTaskError("a string cause")
    assert unwrap(not_an_error) is not_an_error


def test_status_of_looks_inside_wrapped_errors():
    assert status_of(RayTaskError(NotFoundError("block b1"))) == (Code.NOT_FOUND, "block b1")


class FakeContext:
    """The part of a gRPC servicer context the decorators use."""

    def __init__(self):
        self.codes: list[grpc.StatusCode] = []
        self.details: list[str] = []

    def set_code(self, code):
        self.codes.append(code)

    def set_details(self, details):
        self.details.append(details)

    def code(self):
        return self.codes[-1] if self.codes else None


class Servicer:
    def __init__(self, error: BaseException | None = None):
        self.error = error

    @unary("test", response=lambda: "empty reply")
    async def Get(self, request):
        """Get a thing."""
        if self.error:
            raise self.error
        return f"reply to {request}"

    @streaming("test")
    async def Stream(self, request):
        """Stream things."""
        yield f"{request} 1"
        if self.error:
            raise self.error
        yield f"{request} 2"


async def collect(stream) -> list:
    return [item async for item in stream]


def test_unary_success():
    context = FakeContext()
    assert asyncio.run(Servicer().Get("q", grpc_context=context)) == "reply to q"
    assert context.codes == [] and context.details == []
    assert asyncio.run(Servicer().Get("q")) == "reply to q"


def test_unary_error_sets_the_status_and_returns_the_empty_reply():
    context = FakeContext()
    reply = asyncio.run(Servicer(NotFoundError("no block b1")).Get("q", grpc_context=context))
    assert reply == "empty reply"
    assert context.codes == [Code.NOT_FOUND]
    assert context.details == ["no block b1"]


def test_unary_internal_error_hides_its_detail():
    context = FakeContext()
    asyncio.run(Servicer(RuntimeError("secret detail")).Get("q", grpc_context=context))
    assert context.codes == [Code.INTERNAL]
    assert "secret detail" not in context.details[0]


def test_unary_without_context_reraises_the_typed_error():
    error = LimitExceededError("too many blocks")
    with pytest.raises(LimitExceededError) as raised:
        asyncio.run(Servicer(error).Get("q"))
    assert raised.value is error
    inner = NotFoundError("gone")
    with pytest.raises(NotFoundError) as raised:
        asyncio.run(Servicer(RayTaskError(inner)).Get("q"))
    assert raised.value is inner


def test_streaming_success():
    context = FakeContext()
    assert asyncio.run(collect(Servicer().Stream("q", grpc_context=context))) == ["q 1", "q 2"]
    assert context.codes == []
    assert asyncio.run(collect(Servicer().Stream("q"))) == ["q 1", "q 2"]


def test_streaming_error_sets_the_status_and_ends_the_stream():
    context = FakeContext()
    received = []

    async def consume():
        async for item in Servicer(ServiceUnavailableError("model not loaded")).Stream("q", grpc_context=context):
            received.append(item)

    with pytest.raises(StatusSet):
        asyncio.run(consume())
    assert received == ["q 1"]  # what was sent before the error stays sent
    assert context.codes == [Code.UNAVAILABLE]
    assert context.details == ["model not loaded"]


def test_streaming_without_context_reraises_the_typed_error():
    error = InvalidRequestError("empty question")
    with pytest.raises(InvalidRequestError) as raised:
        asyncio.run(collect(Servicer(error).Stream("q")))
    assert raised.value is error


@pytest.mark.parametrize("method", [Servicer.Get, Servicer.Stream])
def test_decorated_methods_take_the_grpc_context(method):
    # Ray Serve passes the context only to methods whose signature names `grpc_context`
    parameters = inspect.signature(method).parameters
    assert list(parameters) == ["self", "request", "grpc_context"]
    assert parameters["grpc_context"].default is None
    assert method.__name__ in ("Get", "Stream")
    assert method.__doc__ in ("Get a thing.", "Stream things.")


def test_stream_is_an_async_generator():
    assert inspect.isasyncgenfunction(Servicer.Stream)
    assert inspect.iscoroutinefunction(Servicer.Get)


def test_every_call_is_counted_by_its_status():
    from prometheus_client import REGISTRY

    def count(name, method, code):
        labels = {"service": "counted", "method": method, "code": code}
        return REGISTRY.get_sample_value(name, labels) or 0.0

    class Counted:
        @unary("counted", response=lambda: None)
        async def Get(self, request):
            if request:
                raise NotFoundError(request)
            return "ok"

        @streaming("counted")
        async def Stream(self, request):
            if request:
                raise InvalidRequestError(request)
            yield "ok"

    before = {(m, c): count("blockrag_requests_total", m, c)
              for m in ("Get", "Stream") for c in ("OK", "NOT_FOUND", "INVALID_ARGUMENT")}
    errors_before = count("blockrag_request_errors_total", "Get", "NOT_FOUND")
    asyncio.run(Counted().Get("", grpc_context=FakeContext()))
    asyncio.run(Counted().Get("missing", grpc_context=FakeContext()))
    asyncio.run(collect(Counted().Stream("")))
    with pytest.raises(StatusSet):
        asyncio.run(collect(Counted().Stream("bad", grpc_context=FakeContext())))
    after = {key: count("blockrag_requests_total", *key) for key in before}
    assert {key: after[key] - before[key] for key in before} == {
        ("Get", "OK"): 1, ("Get", "NOT_FOUND"): 1, ("Get", "INVALID_ARGUMENT"): 0,
        ("Stream", "OK"): 1, ("Stream", "NOT_FOUND"): 0, ("Stream", "INVALID_ARGUMENT"): 1,
    }
    assert count("blockrag_request_errors_total", "Get", "NOT_FOUND") - errors_before == 1
