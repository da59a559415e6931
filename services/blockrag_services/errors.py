"""Typed errors to gRPC status codes, for every servicer method.

A client gets a status code and a message it can act on, never a stack trace: unexpected errors
become INTERNAL with the request's id, and the trace stays in the service log. Calls between
deployments (through handles, no gRPC context) re-raise the typed error to the caller, which
maps it in turn. A request whose bytes did not parse (wire.MalformedRequest) is refused as
INVALID_ARGUMENT before anything else, its access included. A replica that died under a call
to it through a handle makes the call UNAVAILABLE, as the proxy does for its own (proxy_status).
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import AsyncIterator, Callable

import grpc

from blockrag.errors import (
    AuthenticationError,
    BlockRAGError,
    EngineCorrectnessError,
    InvalidRequestError,
    KVCodecError,
    ModelLoadError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    ServiceUnavailableError,
    UnsupportedModelError,
)
from blockrag.scheduler import SchedulerBusyError
from blockrag.telemetry import observe_request

from blockrag_services.access import Access
from blockrag_services.drain import refuse_if_draining
from blockrag_services.proxy_status import DEAD_REPLICA, dead_replica
from blockrag_services.wire import MalformedRequest

log = logging.getLogger("blockrag.services")

# first match wins: subclasses before their bases
_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (QuotaExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (SchedulerBusyError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotImplementedError, grpc.StatusCode.UNIMPLEMENTED),
    (ModelLoadError, grpc.StatusCode.UNAVAILABLE),
    (EngineCorrectnessError, grpc.StatusCode.UNAVAILABLE),
    (UnsupportedModelError, grpc.StatusCode.UNAVAILABLE),
    (ServiceUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (KVCodecError, grpc.StatusCode.DATA_LOSS),
    (BlockRAGError, grpc.StatusCode.FAILED_PRECONDITION),
)


class StatusSet(Exception):
    """Ends a failed stream; the gRPC status and details are already on the context."""


def unwrap(error: BaseException) -> BaseException:
    """The user exception inside a Ray task error (raised through a deployment handle)."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    error = unwrap(error)
    if dead_replica(error):  # a deployment this call went to through a handle died: retriable
        log.warning("a call through a handle failed: its replica stopped: %s", error)  # ids stay here
        return grpc.StatusCode.UNAVAILABLE, DEAD_REPLICA
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code, str(error)
    request_id = uuid.uuid4().hex[:12]
    log.error("internal error %s", request_id, exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal error (id {request_id}); the service log has the details"


def _fail(service: str, method: str, context, error: BaseException) -> None:
    code, message = status_of(error)
    observe_request(service, method, code.name)
    if context is None:  # a call through a handle: the caller maps the typed error
        raise unwrap(error)
    context.set_code(code)
    context.set_details(message)
    retry_after_s = getattr(unwrap(error), "retry_after_s", None)
    if retry_after_s is not None:  # gRPC's own retry hint, which a client's retry policy honours
        context.set_trailing_metadata([("grpc-retry-pushback-ms", str(int(retry_after_s * 1000)))])


def unary(service: str, response: Callable[[], object], access: Access | None = None):
    """Decorate `async def Method(self, request, grpc_context=None)`; `response` builds the empty
    reply sent along with an error status. `access`: who may call it from the gRPC port (None:
    anyone; every servicer method of the platform names one, a test checks)."""

    def wrap(fn):
        @functools.wraps(fn)
        async def method(self, request, grpc_context=None):
            try:
                await _admit(access, self, request, grpc_context, fn.__name__)
                result = await fn(self, request)
            except Exception as e:  # noqa: BLE001 - every error gets a status
                _fail(service, fn.__name__, grpc_context, e)
                return response()
            observe_request(service, fn.__name__, "OK")
            return result

        method.access = access
        return _with_context_parameter(method)

    return wrap


def streaming(service: str, access: Access | None = None):
    """Decorate `async def Method(self, request)` yielding responses (server streaming); `access`
    as for unary."""

    def wrap(fn):
        @functools.wraps(fn)
        async def method(self, request, grpc_context=None) -> AsyncIterator:
            try:
                await _admit(access, self, request, grpc_context, fn.__name__)
                async for item in fn(self, request):
                    yield item
            except Exception as e:  # noqa: BLE001
                _fail(service, fn.__name__, grpc_context, e)
                # a stream that ends normally would report OK: raising makes the proxy send the
                # status set above (its details, not this exception's text)
                raise StatusSet() from None
            observe_request(service, fn.__name__, "OK")

        method.access = access
        return _with_context_parameter(method)

    return wrap


async def _admit(access: Access | None, servicer, request, grpc_context, name: str) -> None:
    """Only calls from the gRPC port carry a context; calls through handles are the platform's
    (they belong to requests admitted already, and go on while the platform drains)."""
    if isinstance(request, MalformedRequest):
        raise request.error()
    if grpc_context is not None:
        refuse_if_draining()  # UNAVAILABLE: the platform is shutting down (drain.py)
    if access is not None and grpc_context is not None:
        await access.admit(servicer.authorizer, request, grpc_context.invocation_metadata(), name)


def _with_context_parameter(method):
    """Serve passes the gRPC context only to methods whose signature has `grpc_context`; the
    signature it inspects must be the wrapper's, not the wrapped function's."""
    del method.__wrapped__
    return method
