"""Calls routed to the wrong application.

Serve's proxy sends a call to the application its `application` metadata names, whatever the
method; the replica then looks the method up by name. A deployment lacking it made Serve answer
INTERNAL, with a Ray stack (pid, actor id) as the details. A deployment with this mixin answers a
method of another service with INVALID_ARGUMENT, naming the application that serves it.
"""

from __future__ import annotations

import types

from google.protobuf.message_factory import GetMessageClass

from blockrag.errors import InvalidRequestError
from blockrag_services.errors import streaming, unary
from blockrag_services.wire import RPCS


class OneApplication:
    """Mixin for a deployment behind the gRPC port; `application` is its Serve application."""

    application: str

    def __getattr__(self, name: str):
        # only for attributes the instance lacks: its own methods never come here
        if name not in RPCS:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return types.MethodType(_misrouted(self.application, name), self)


def _misrouted(here: str, name: str):
    app, method = RPCS[name]
    message = (f"{method.full_name} is served by the application {app!r}, not {here!r}: send the metadata "
               f"application: {app}")

    if method.server_streaming:
        async def refuse(self, request):
            raise InvalidRequestError(message)
            yield  # an async generator, as the proxy streams it

        wrap = streaming(here)
    else:
        async def refuse(self, request):
            raise InvalidRequestError(message)

        wrap = unary(here, GetMessageClass(method.output_type))
    refuse.__name__ = refuse.__qualname__ = name
    return wrap(refuse)
