"""What the end-to-end tests send: application metadata, the shared collection, a streaming ask."""

from __future__ import annotations

from blockrag.v1 import generation_pb2

GENERATION = (("application", "generation"),)
CACHE_INDEX = (("application", "cache_index"),)
PRECOMPUTE = (("application", "precompute"),)
ADMIN = (("application", "admin"),)
COLLECTION = "samples"


def ask(generation, request: generation_pb2.GenerateRequest) -> tuple[str, generation_pb2.Usage]:
    """The streamed answer and the usage of its last message."""
    pieces, usage = [], None
    for reply in generation.Generate(request, metadata=GENERATION):
        pieces.append(reply.text)
        if reply.done:
            usage = reply.usage
    assert usage is not None, "the stream ended without a done message"
    return "".join(pieces), usage


def with_key(metadata: tuple, key: str) -> tuple:
    """The metadata plus an API key: the internal services (cache index, precompute) answer an
    admin key only, from outside, even on a platform without authentication."""
    return (*metadata, ("authorization", f"Bearer {key}"))
