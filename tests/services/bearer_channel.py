"""A grpc.aio channel that sends an API key (`authorization: Bearer <key>`) with every call, as
the platform's client does."""

from __future__ import annotations

import grpc


class _Bearer:
    def __init__(self, key: str) -> None:
        self.key = key

    def _with_key(self, details):
        metadata = tuple(details.metadata or ()) + (("authorization", f"Bearer {self.key}"),)
        return details._replace(metadata=metadata)


# grpc.aio files an interceptor under its first matching kind only: one class per kind
class _UnaryBearer(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(self._with_key(details), request)


class _StreamBearer(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(self._with_key(details), request)


def bearer_channel(address: str, key: str | None) -> grpc.aio.Channel:
    """A channel to address; every call carries key when one is given."""
    return grpc.aio.insecure_channel(address, interceptors=[_UnaryBearer(key), _StreamBearer(key)] if key else None)
