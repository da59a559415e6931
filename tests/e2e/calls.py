"""What the end-to-end tests send: application metadata, the shared collection, a streaming ask."""

from __future__ import annotations

from blockrag.v1 import generation_pb2

GENERATION = (("application", "generation"),)
CACHE_INDEX = (("application", "cache_index"),)
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
