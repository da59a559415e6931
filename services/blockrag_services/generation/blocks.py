"""PrecomputeEncoder: a generation replica's encoder (blockrag.resolve.BlockEncoder) for blocks
nobody has cached: ONE call to Precompute for all of a request's missing blocks, whose answer
carries their KV frames (return_kv), decoded here onto the runtime's device. Precompute still
writes and commits the entries, for the other replicas; nothing is read back from the store.
"""

from __future__ import annotations

import asyncio

from blockrag.attention import BlockKV
from blockrag.errors import KVCodecError
from blockrag.kvcache import KVCodec
from blockrag.resolve import Runtime
from blockrag.resolve.encoder import Progress
from blockrag.v1 import precompute_pb2 as precompute_pb
from blockrag_services.handles import PRECOMPUTE, Handles


class PrecomputeEncoder:
    def __init__(self, handles: Handles):
        self.handles = handles

    async def encode(self, runtime: Runtime, tenant: str, texts: list[str],
                     progress: Progress | None = None) -> list[BlockKV]:
        """The KV of each text under the runtime's version, in order (progress is not reported:
        the work happens on the Precompute replica)."""
        computed = await self.handles[PRECOMPUTE].Precompute.remote(precompute_pb.PrecomputeRequest(
            texts=texts, model_version=runtime.version, tenant=tenant, return_kv=True))
        frames = [entry.kv for entry in computed.blocks]  # one per requested text, in order
        if len(frames) != len(texts) or not all(frames):  # e.g. a replica from before return_kv
            raise KVCodecError(f"precompute returned {sum(map(bool, frames))} KV frames for {len(texts)} blocks; "
                               f"are all precompute replicas upgraded?")
        # the decode checks each frame's checksum and model fingerprint against the runtime's
        device = runtime.engine.device
        return await asyncio.to_thread(lambda: [KVCodec.decode(f, runtime.version, device) for f in frames])
