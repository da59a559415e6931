"""The drain's rules without Ray (blockrag_services.drain, errors): once the drain file exists, a
call from the port is UNAVAILABLE before its method runs while a call through a handle (no gRPC
context: part of a request admitted already) still runs; the wait ends when nothing is in flight,
or at the grace period with the count left; quota refusals are RESOURCE_EXHAUSTED. The whole path
on a real platform: test_platform_drain.py."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from blockrag.errors import QuotaExceededError, ServiceUnavailableError
from blockrag_services import drain
from blockrag_services.errors import StatusSet, status_of, streaming, unary


class Context:
    def __init__(self) -> None:
        self.code = self.details = None

    def set_code(self, code) -> None:
        self.code = code

    def set_details(self, details) -> None:
        self.details = details


class Servicer:
    def __init__(self) -> None:
        self.ran: list[str] = []

    @unary("test", response=lambda: "empty")
    async def Get(self, request):
        self.ran.append(request)
        return "reply"

    @streaming("test")
    async def Stream(self, request):
        self.ran.append(request)
        yield "piece"


@pytest.fixture
def drain_file(tmp_path, monkeypatch):
    path = tmp_path / "drain" / "draining"
    monkeypatch.setenv(drain.DRAIN_ENV, str(path))
    return path


def test_new_calls_from_the_port_are_refused_while_calls_through_handles_go_on(drain_file):
    servicer = Servicer()
    assert not drain.draining()
    assert asyncio.run(servicer.Get("before", grpc_context=Context())) == "reply"
    drain.mark_draining(drain_file)
    assert drain.draining()
    context = Context()
    assert asyncio.run(servicer.Get("from the port", grpc_context=context)) == "empty"
    assert context.code == grpc.StatusCode.UNAVAILABLE
    assert context.details == ("the platform is shutting down and takes no new requests; retry on another instance "
                               "or after it restarts")
    stream_context = Context()

    async def stream():
        return [piece async for piece in servicer.Stream("a stream", grpc_context=stream_context)]

    with pytest.raises(StatusSet):  # the stream ends with the status set on its context
        asyncio.run(stream())
    assert stream_context.code == grpc.StatusCode.UNAVAILABLE
    assert asyncio.run(servicer.Get("through a handle")) == "reply"  # no context: an admitted request's call
    assert servicer.ran == ["before", "through a handle"]


def test_no_drain_file_configured_is_never_draining(monkeypatch):
    monkeypatch.delenv(drain.DRAIN_ENV, raising=False)
    assert not drain.draining()
    drain.refuse_if_draining()


def test_the_wait_ends_when_idle_or_at_the_grace_period(monkeypatch):
    counts = iter([3, 1, 0, 5])
    monkeypatch.setattr(drain, "requests_in_flight", lambda: next(counts))
    assert drain.wait_idle(30, poll_s=0.01) == 0
    assert next(counts) == 5  # it stopped asking at the first 0
    monkeypatch.setattr(drain, "requests_in_flight", lambda: 2)
    assert drain.wait_idle(0.2, poll_s=0.01) == 2  # still busy at the deadline: the count left


def test_status_codes():
    assert status_of(QuotaExceededError("over"))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_of(ServiceUnavailableError("shutting down"))[0] == grpc.StatusCode.UNAVAILABLE
