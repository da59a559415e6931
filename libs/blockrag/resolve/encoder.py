"""BlockEncoder: how a resolver gets the KV of blocks nobody has cached (one call per request).

LocalEncoder runs the engine in this process (through a BlockWriter when there is a store, so
the entries are kept for later); the platform's generation replicas ask Precompute instead
(blockrag_services.generation.blocks.PrecomputeEncoder), whose answer carries the KV back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from blockrag.attention import BlockAttentionEngine, BlockKV
from blockrag.engine_lock import locked_in_thread
from blockrag.prompt import PromptTemplate

if TYPE_CHECKING:
    from blockrag.resolve.writer import BlockWriter

Progress = Callable[[int, int], None]  # (blocks done, blocks to encode)


class Runtime(Protocol):
    """A loaded model version as resolution needs it (blockrag.model_runtime.ModelRuntime is one)."""

    engine: BlockAttentionEngine
    template: PromptTemplate
    version: str  # the model fingerprint: part of every cache key and stored entry


class BlockEncoder(Protocol):
    async def encode(self, runtime: Runtime, tenant: str, texts: list[str],
                     progress: Progress | None = None) -> list[BlockKV]:
        """The KV of each text under ``runtime.version``, in order, on the runtime's device;
        stored for other readers where the encoder has a store."""
        ...


class LocalEncoder:
    """The engine of this process; with a writer, each block is also stored and committed."""

    def __init__(self, writer: BlockWriter | None = None, lock: asyncio.Lock | None = None,
                 group_tokens: int | None = None):
        """``lock``: held while the engine encodes (shared with whoever else drives the engine);
        ``group_tokens``: progress granularity without a writer (default: half an engine batch)."""
        self.writer, self.lock, self.group_tokens = writer, lock or asyncio.Lock(), group_tokens

    async def encode(self, runtime: Runtime, tenant: str, texts: list[str],
                     progress: Progress | None = None) -> list[BlockKV]:
        if self.writer is not None:
            written = await locked_in_thread(self.lock, self.writer.write, runtime, tenant, texts, recompute=True,
                                             progress=progress)
            by_text = {t: w.kv for t, w in zip(dict.fromkeys(t.strip() for t in texts), written)}
            return [by_text[t.strip()] for t in texts]
        return await locked_in_thread(self.lock, self._encode, runtime, texts, progress)

    def _encode(self, runtime: Runtime, texts: list[str], progress: Progress | None) -> list[BlockKV]:
        engine = runtime.engine
        blocks = [runtime.template.block_ids(t) for t in texts]
        out: list[BlockKV] = []
        for _, kvs in engine.encode_groups(blocks, self.group_tokens or engine.max_batch_tokens // 2):
            out.extend(kvs)
            if progress is not None:
                progress(len(out), len(blocks))
        return out
