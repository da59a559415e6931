"""LocalPipeline: the whole ask path in one process, blocks cached in a local directory.

This is the main job until the platform's services replace it: segment documents into blocks,
look each block's KV up by cache key, encode the misses (batched), then prefill the question over
the cached blocks and stream the answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from blockrag.attention import BlockAttentionEngine, BlockKV
from blockrag.errors import KVCodecError
from blockrag.kvcache import CacheKey, KVCodec
from blockrag.kvcache.local_store import LocalDirectoryStore
from blockrag.prompt import PromptTemplate
from blockrag.text_stream import TextStream


@dataclass
class BlockStats:
    """Where the context blocks came from."""

    blocks: int = 0
    from_store: int = 0
    encoded: int = 0
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


class LocalPipeline:
    """Blocks by cache key from an optional local store; answers streamed from the engine."""

    def __init__(self, engine: BlockAttentionEngine, tokenizer: PreTrainedTokenizerBase,
                 store: LocalDirectoryStore | None = None, namespace: str = "default"):
        self.engine, self.tokenizer, self.store, self.namespace = engine, tokenizer, store, namespace
        self.template = PromptTemplate(tokenizer)

    def context_blocks(self, passages: Sequence[str],
                       progress: Callable[[int, int], None] | None = None) -> tuple[list[BlockKV], BlockStats]:
        """KV of the prompt's prefix block and one block per passage, in order.

        progress(done, total) is called as missing blocks are encoded (total = blocks to encode).
        """
        ids = [tuple(self.template.prefix_ids())] + [tuple(self.template.block_ids(p)) for p in passages]
        fingerprint = self.engine.fingerprint
        stats = BlockStats(blocks=len(ids), context_tokens=sum(map(len, ids)))
        keys = {block: CacheKey.of(self.namespace, fingerprint, block) for block in ids}  # distinct blocks
        found: dict[tuple[int, ...], BlockKV] = {}
        for block, key in keys.items():
            kv = self._load(key, fingerprint, stats)
            if kv is not None:
                found[block] = kv
        missing = [b for b in keys if b not in found]
        started = time.perf_counter()
        for done, (block, kv) in enumerate(zip(missing, self._encode(missing)), start=1):
            found[block] = kv
            if self.store is not None:
                self.store.put(keys[block], KVCodec.encode(kv, fingerprint))
            if progress is not None:
                progress(done, len(missing))
        stats.encode_seconds = time.perf_counter() - started
        stats.encoded = len(missing)
        return [found[b] for b in ids], stats

    def _load(self, key: CacheKey, fingerprint: str, stats: BlockStats) -> BlockKV | None:
        data = self.store.get(key) if self.store is not None else None
        if data is None:
            return None
        try:
            kv = KVCodec.decode(data, expected_fingerprint=fingerprint)
        except KVCodecError:
            stats.corrupt += 1  # a damaged entry is a miss: re-encoded and overwritten below
            return None
        stats.from_store += 1
        return kv

    def _encode(self, blocks: list[tuple[int, ...]]) -> Iterator[BlockKV]:
        """Encode in groups of about half an engine batch, yielding as each group finishes (progress)."""
        for _, kvs in self.engine.encode_groups(blocks, self.engine.max_batch_tokens // 2):
            yield from kvs

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
