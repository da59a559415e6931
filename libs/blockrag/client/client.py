"""BlockRAGClient: the platform's services over one gRPC channel.

Ray Serve's gRPC proxy serves every application on one port and routes each call by the
`application` metadata key, so every call here names its application. With an API key (the
argument, or $BLOCKRAG_API_KEY) every call sends it as `authorization: Bearer <key>`. With TLS
(the argument, or $BLOCKRAG_TLS*: see TLSConfig) the channel is TLS, as an Ingress in front of the
platform needs; the platform's own port is plaintext.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blockrag.client.failure import API_KEY_ENV, explain
from blockrag.client.tls import TLSConfig
from blockrag.defaults import ADDRESS as DEFAULT_ADDRESS
from blockrag.defaults import ADDRESS_ENV
from blockrag.errors import BlockRAGError
from blockrag.v1 import admin_pb2_grpc, generation_pb2, generation_pb2_grpc, segmentation_pb2


class PlatformError(BlockRAGError):
    """A call failed; code is the gRPC status code. ``kind`` says what to check when it is not the
    platform's answer: "unreachable" (the address), "tls" (the TLS settings), "unauthenticated" or
    "permission" (the API key); None otherwise. The message is one line that says it."""

    def __init__(self, code: grpc.StatusCode, details: str, address: str, tls: TLSConfig | None = None):
        self.code, self.details = code, details
        self.kind, message = explain(code, details, address, tls or TLSConfig())
        super().__init__(message)


class IngestIncompleteError(BlockRAGError):
    """An Ingest wrote some documents, not all (the object store failed or a quota was reached
    meanwhile): ``response`` holds both lists, ``failed`` the documents not written (nothing of
    them is recorded)."""

    def __init__(self, response: generation_pb2.IngestResponse):
        self.response, self.failed = response, list(response.failed_documents)
        total = len(self.failed) + len(response.documents)
        shown = "; ".join(f"{d.document_id!r}: {d.reason}" for d in self.failed[:3])
        more = f"; and {len(self.failed) - 3} more" if len(self.failed) > 3 else ""
        super().__init__(f"{len(self.failed)} of {total} document(s) not ingested ({shown}{more}); the other "
                         f"{len(response.documents)} were: ingest the failed ones again")


class BlockRAGClient:
    def __init__(self, address: str | None = None, timeout_s: float = 600.0, api_key: str | None = None,
                 tls: TLSConfig | None = None):
        """``tls`` None: from $BLOCKRAG_TLS* (plaintext when none is set)."""
        self.address = address or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS
        self.api_key = (api_key or os.environ.get(API_KEY_ENV) or "").strip() or None
        self.tls = tls if tls is not None else TLSConfig.from_env()
        self.timeout_s = timeout_s
        # KV-free messages, but long documents: lift the default 4 MiB cap
        options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
        if self.tls.enabled:
            self.channel = grpc.secure_channel(self.address, self.tls.credentials(),
                                               options=options + self.tls.channel_options())
        else:
            self.channel = grpc.insecure_channel(self.address, options=options)
        self.generation = generation_pb2_grpc.GenerationServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> BlockRAGClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def metadata(self, app: str) -> tuple[tuple[str, str], ...]:
        """What every call to application `app` sends."""
        if self.api_key is None:
            return (("application", app),)
        return (("application", app), ("authorization", f"Bearer {self.api_key}"))

    def error(self, e: grpc.RpcError) -> PlatformError:
        """A failed call as the one-line PlatformError (it knows this channel's address and TLS)."""
        return PlatformError(e.code(), e.details() or "", self.address, self.tls)

    def _call(self, method, request, app: str):
        try:
            return method(request, metadata=self.metadata(app), timeout=self.timeout_s)
        except grpc.RpcError as e:
            raise self.error(e) from None

    def ingest(self, collection: str, documents: Sequence[tuple[str, str]], tenant: str = "", *,
               partial: bool = False, **segment_options) -> generation_pb2.IngestResponse:
        """Ingest (id, text) documents. When the object store fails or a quota is reached midway,
        the documents written before are kept: IngestIncompleteError names the others, or with
        ``partial`` the response lists them in ``failed_documents``. None written: PlatformError
        UNAVAILABLE (the store) or RESOURCE_EXHAUSTED (a quota)."""
        request = generation_pb2.IngestRequest(
            collection=collection, tenant=tenant,
            documents=[generation_pb2.Document(id=i, text=t) for i, t in documents],
            segment_options=segmentation_pb2.SegmentOptions(**segment_options))
        response = self._call(self.generation.Ingest, request, "generation")
        if response.failed_documents and not partial:
            raise IngestIncompleteError(response)
        return response

    def generate(self, request: generation_pb2.GenerateRequest) -> Iterator[generation_pb2.GenerateResponse]:
        try:
            yield from self.generation.Generate(request, metadata=self.metadata("generation"), timeout=self.timeout_s)
        except grpc.RpcError as e:
            raise self.error(e) from None

    def admin_call(self, name: str, request):
        return self._call(getattr(self.admin, name), request, "admin")

    def serving(self, service: str = "") -> bool:
        """grpc.health.v1 Check (answered by the proxy itself, no application metadata)."""
        try:
            reply = self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def wait_serving(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.serving():
                return True
            time.sleep(1.0)
        return False

