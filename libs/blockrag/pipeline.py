"""LocalPipeline: the whole ask path in one process, blocks cached in a local directory.

Segment documents into blocks, resolve each block's KV through the same core as the platform
(blockrag.resolve: the cache index and object store of the cache directory, misses encoded here
in batches and stored), then prefill the question over the cached blocks and stream the answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from blockrag.attention import BlockAttentionEngine, BlockKV
from blockrag.kvcache.compression import KVCompression
from blockrag.kvcache.index import CacheIndex
from blockrag.kvcache.local_store import LocalDirectoryStore
from blockrag.kvcache.object_store import LocalObjectStore
from blockrag.prompt import PromptTemplate
from blockrag.resolve import BlockRef, BlockResolver, BlockWriter, LocalEncoder, ResolveLimits, StoreTier
from blockrag.text_stream import TextStream

INDEX_FILE = "index.db"  # the cache index, next to the objects of the cache directory


@dataclass
class BlockStats:
    """Where the context blocks came from (the prompt's opening block counted as one)."""

    blocks: int = 0
    from_store: int = 0  # distinct blocks from the KV cache (this process's memory or the directory)
    encoded: int = 0  # distinct blocks encoded now
    corrupt: int = 0  # entries that failed their checksum and were re-encoded
    context_tokens: int = 0
    encode_seconds: float = 0.0


@dataclass
class AnswerStats:
    """Token counts by origin and latencies of one answer."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    computed_tokens: int = 0
    new_tokens: int = 0
    ttft_ms: float = 0.0
    total_ms: float = 0.0


@dataclass
class Answer:
    """Iterate for text pieces as they are generated; stats are final once iteration ends."""

    pieces: Iterator[str]
    stats: AnswerStats = field(default_factory=AnswerStats)

    def __iter__(self) -> Iterator[str]:
        return self.pieces


@dataclass(frozen=True)
class _Runtime:
    """The engine as a model version (blockrag.resolve.Runtime)."""

    engine: BlockAttentionEngine
    template: PromptTemplate
    version: str


class LocalPipeline:
    """Blocks resolved through blockrag.resolve over an optional cache directory; answers
    streamed from the engine."""

    def __init__(self, engine: BlockAttentionEngine, tokenizer: PreTrainedTokenizerBase,
                 store: LocalDirectoryStore | None = None, namespace: str = "default",
                 limits: ResolveLimits | None = None, compression: KVCompression = KVCompression.NONE):
        """``store``: the cache directory (its objects, and the cache index in INDEX_FILE there);
        None encodes every block and keeps nothing. ``namespace``: the tenant blocks belong to.
        ``limits``: none by default (the user's own documents, on the user's machine).
        ``compression``: how the cache directory holds KV (the platform's kv_compression); entries
        of another setting there are misses, recomputed and replaced."""
        limits = limits or ResolveLimits.unbounded()
        self.engine, self.tokenizer, self.namespace = engine, tokenizer, namespace
        self.template = PromptTemplate(tokenizer)
        self.runtime = _Runtime(engine, self.template, engine.fingerprint)
        lock = asyncio.Lock()  # one engine: the encoder and the opening block take turns
        tier = writer = None
        if store is not None:
            index = CacheIndex.open(f"sqlite:///{store.root / INDEX_FILE}")
            objects = LocalObjectStore(store.root)
            tier = StoreTier(index, objects, compression=compression)
            writer = BlockWriter(index, objects, limits, batch_tokens=engine.max_batch_tokens // 2,
                                 compression=compression)
        self.resolver = BlockResolver(LocalEncoder(writer, lock), store=tier, limits=limits, engine_lock=lock)

    def context_blocks(self, passages: Sequence[str],
                       progress: Callable[[int, int], None] | None = None) -> tuple[list[BlockKV], BlockStats]:
        """KV of the prompt's prefix block and one block per passage, in order.

        progress(done, total) is called as missing blocks are encoded (total = blocks to encode).
        """
        refs = [BlockRef.of(self.namespace, text=p) for p in passages]
        resolution = asyncio.run(self.resolver.resolve(self.runtime, self.namespace, refs, progress=progress))
        if self.resolver.store is not None:
            self.resolver.store.access.flush()  # a CLI process may end right after: keep its hits
        distinct = {b.block_id: b for b in (resolution.prefix, *resolution.blocks)}.values()
        encoded = sum(b.tier == "computed" for b in distinct)
        stats = BlockStats(blocks=1 + len(refs), from_store=len(distinct) - encoded, encoded=encoded,
                           corrupt=resolution.corrupt, context_tokens=resolution.context_tokens,
                           encode_seconds=resolution.encode_seconds)
        return resolution.kvs, stats

    def answer(self, kvs: Sequence[BlockKV], question: str, max_new_tokens: int = 64,
               temperature: float = 0.0, seed: int | None = None) -> Answer:
        """Stream the answer to `question` over the context blocks `kvs`."""
        final = self.template.final_ids(question)
        stats = AnswerStats()
        return Answer(self._stream(kvs, final, max_new_tokens, temperature, seed, stats), stats)

    def _stream(self, kvs, final, max_new_tokens, temperature, seed, stats: AnswerStats) -> Iterator[str]:
        stats.cached_tokens = sum(kv.num_tokens for kv in kvs)
        stats.computed_tokens = len(final)
        stats.prompt_tokens = stats.cached_tokens + stats.computed_tokens
        started = time.perf_counter()
        stream = TextStream(self.tokenizer)
        for token in self.engine.generate(kvs, final, max_new_tokens, temperature, seed=seed):
            if not stream.tokens:
                stats.ttft_ms = (time.perf_counter() - started) * 1000
            piece = stream.push(token)
            if piece:
                yield piece
        stats.new_tokens = len(stream.tokens)
        stats.total_ms = (time.perf_counter() - started) * 1000
