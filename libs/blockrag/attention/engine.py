"""BlockAttentionEngine: encode blocks once, assemble them anywhere, prefill only the final block."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers import DynamicCache, PreTrainedModel

from blockrag.attention.block_kv import BlockKV
from blockrag.attention.cache import BlockCache, BufferPool
from blockrag.attention.final_block_kernel_support import graphs_supported
from blockrag.attention.fusion import fuse_elementwise, fuse_projections
from blockrag.attention.gate import GateReport, check_engine
from blockrag.attention.layer_feed import feed_for
from blockrag.attention.layout import Opening
from blockrag.attention.placement import triton_available
from blockrag.attention.rotary import RotaryReencoder
from blockrag.attention.sampling import sample_token
from blockrag.attention.sdpa import NAME as BLOCK_SDPA
from blockrag.attention.sequence import GenerationRequest
from blockrag.errors import InvalidBlockError, InvalidRequestError, UnsupportedModelError

if TYPE_CHECKING:
    from blockrag.attention.batch import GenerationBatch

TokenIds = Sequence[int] | torch.Tensor
HOST_READS = ("staged", "direct", "layered", "auto")


@dataclass
class PrefillOutput:
    """logits: [kept positions, vocab] float32 (all final-block positions unless fewer were asked);
    cache: the assembled KV, ready for decoding; token counts by origin."""

    logits: torch.Tensor
    cache: BlockCache
    cached_tokens: int
    computed_tokens: int


class BlockAttentionEngine:
    """Block attention over any transformers causal LM with rotary positions (eval mode).

    The engine inserts no token of its own: the caller's blocks are the prompt.

    fuse: compile the model's RMSNorm and MLP modules for large inputs (precompute), in place;
    default: on CUDA where Triton exists (fusion.py says why and what it buys).
    decode_fusion (with fuse): also make q/k/v and gate/up one matmul each and take the compiled
    module forwards inside CUDA graphs (decode steps, graphed prefills); graph_batch_decode: a
    GenerationBatch replays its decode steps from CUDA graphs (batch_graphs.py). Both on by
    default (tests/gpu/test_decode_graphs.py and test_batch_cuda.py passed with them on an H100,
    2026-12-06: the 8B decode step at 32K 9.96 -> 8.43 ms, 16 batched answers 2.9x -> 9.1x one
    alone's tokens/s; bench/gpu/NOTES.md); both take effect on CUDA only.
    cuda_graphs: replay the final block's forward from CUDA graphs for contexts up to
    graph_context_tokens and questions up to 256 tokens (graphs.py); default: on CUDA where Triton
    exists and the attention is block_sdpa. graph_decode_tokens > 0: a lone answer of up to that
    many tokens (default 1024) also replays its decode steps from a graph, in the workspace it
    holds (tests/gpu/test_decode_graphs.py); 0 keeps decoding eager. The workspace takes
    (graph_context_tokens + 256 + graph_decode_tokens) x the KV bytes of a token of GPU memory
    (4.3 GB at 32K on an 8B model), allocated at first use.
    sink_token_id: block sink tokens (block distillation): every context block is preceded by
    this token, which only that block's tokens see. Its KV depends on nothing but the model (it
    sits alone at the block's first position), so it is computed once (`sink`) and placed before
    every block at assembly; stored blocks hold their own tokens only, at local positions
    0..L-1 as without sinks. A block of L tokens then takes L + 1 positions of the prompt.
    opening: the shared opening (block distillation's alternative to sinks, layout.py): every
    prompt's first block is opening.tokens (the chat template's system message and the start of
    the user turn), and every other context block is encoded after them, opening.gap positions
    apart, so a block's tokens see the opening much as they would under full attention. The
    opening's own KV is computed once (`opening_kv`: encode_block of the opening returns it);
    stored blocks hold their own tokens only, at local positions 0..L-1, so a block still takes
    L positions. A prompt whose first block is not the opening is refused (its blocks were
    encoded for a context the prompt does not have).
    """

    def __init__(self, model: PreTrainedModel, *, max_batch_tokens: int = 4096, host_reads: str = "auto",
                 fuse: bool | None = None, cuda_graphs: bool | None = None, graph_context_tokens: int = 32768,
                 graph_decode_tokens: int = 1024, decode_fusion: bool = True, graph_batch_decode: bool = True,
                 sink_token_id: int | None = None, opening: Opening | None = None):
        if model.config._attn_implementation not in (BLOCK_SDPA, "sdpa", "eager"):
            raise UnsupportedModelError(
                f"attention implementation {model.config._attn_implementation!r} cannot take a "
                f"block mask; load the model with attn_implementation={BLOCK_SDPA!r} or 'sdpa'"
            )
        self.model = model.eval()
        self.reencoder = RotaryReencoder.from_model(model)
        fused = fuse if fuse is not None else (self.device.type == "cuda" and triton_available())
        self.decode_fusion = bool(fused and decode_fusion)  # compiled modules inside CUDA graphs (graphs.py)
        if self.decode_fusion:
            fuse_projections(model)  # first: fuse_elementwise wraps the gated MLP's new forward
        if fused:
            fuse_elementwise(model)
        self.graph_batch_decode = graph_batch_decode
        config = model.config.get_text_config()
        self.num_layers = config.num_hidden_layers
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.vocab_size = config.vocab_size
        self.max_batch_tokens = max_batch_tokens
        # how the GPU reads blocks kept in pinned host memory: "staged" (copied to the device by
        # DMA first; 100 ms at 32K on an 8B model, H200), "direct" (the placement kernel reads
        # them over PCIe in place; 104 ms there; bench/gpu/RESULTS.md), "layered" (copied in
        # groups of layers while the forward runs, which then runs eagerly: layer_feed.py; 92.5
        # against 99.2 ms staged at 32K, H100) or "auto" (layered for 1.5 GB and more of host
        # blocks, staged below: layer_feed.feeds)
        if host_reads not in HOST_READS:
            raise InvalidRequestError(f"host_reads must be one of {', '.join(HOST_READS)}; got {host_reads!r}")
        self.host_reads = host_reads
        self.buffers = BufferPool()
        self.graph_context_tokens, self.graph_decode_tokens = graph_context_tokens, graph_decode_tokens
        if cuda_graphs and not graphs_supported(self):
            raise UnsupportedModelError(
                "cuda_graphs=True needs a CUDA device, Triton, attn_implementation='block_sdpa' and a head "
                f"dim in (16, 32, 64, 128); this engine has {self.device.type}, "
                f"{model.config._attn_implementation!r}, head dim {self.head_dim}"
            )
        self.cuda_graphs = graphs_supported(self) if cuda_graphs is None else cuda_graphs
        self._graphs = None
        eos = [model.generation_config.eos_token_id, config.eos_token_id]
        self.stop_ids = frozenset(t for e in eos for t in (e if isinstance(e, list) else [e]) if t is not None)
        if sink_token_id is not None and not 0 <= sink_token_id < self.vocab_size:
            raise InvalidRequestError(f"sink_token_id must lie in [0, {self.vocab_size}), got {sink_token_id}")
        self.sink_token_id = sink_token_id
        self.sink: BlockKV | None = None
        if sink_token_id is not None:
            # the sink alone at position 0: [layers, H, 1, D], the same for every block
            self.sink = self._encode_rows([(sink_token_id,)], start=0)[0]
        if opening is not None and sink_token_id is not None:
            raise InvalidRequestError("an engine takes block sink tokens or a shared opening, not both")
        self.opening = opening
        self.opening_kv: BlockKV | None = None
        if opening is not None:
            # the opening alone at 0..P-1, as every prompt's first block: [layers, H, P, D]
            self.opening_kv = self._encode_rows([self.token_ids(opening.tokens)], start=0)[0]

    @classmethod
    def for_serving(cls, model: PreTrainedModel, **kwargs) -> BlockAttentionEngine:
        """An engine whose cached path has passed the correctness gate (EngineCorrectnessError if not)."""
        engine = cls(model, **kwargs)
        engine.gate_report = engine.verify()
        return engine

    def verify(self, seed: int = 0) -> GateReport:
        """Run the correctness gate now; raises EngineCorrectnessError on disagreement."""
        return check_engine(self, seed=seed)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def fingerprint(self) -> str:
        """The model version as cache keys and stored entries name it: the weights (a merged
        adapter included), the dtype and the sink or opening setting, whose blocks' KV differ."""
        from blockrag.models.fingerprint import model_fingerprint, with_opening, with_sink

        return with_opening(with_sink(model_fingerprint(self.model), self.sink_token_id), self.opening)

    def context_length(self, block_tokens: Sequence[int]) -> int:
        """Positions that context blocks of these lengths take in a prompt (sinks included)."""
        return sum(block_tokens) + (len(block_tokens) if self.sink is not None else 0)

    # -- encoding ------------------------------------------------------------------------------

    def encode_block(self, token_ids: TokenIds) -> BlockKV:
        """One block alone at local positions 0..L-1."""
        return self.encode_blocks([token_ids])[0]

    def encode_blocks(self, blocks: Sequence[TokenIds]) -> list[BlockKV]:
        """Many blocks, batched into forwards of up to max_batch_tokens (padded) tokens.

        Each block is one row of the batch, right-padded to the longest row: under the causal
        mask a row's real tokens never see its padding, so every row is encoded exactly as if
        alone (the block-diagonal pattern), and SDPA runs its plain causal kernels with no mask
        tensor at all. Blocks are sorted by length so that rows in a batch pad little.
        """
        ids = [self.token_ids(b) for b in blocks]
        opening = self.opening.tokens if self.opening else None
        out: list[BlockKV | None] = [self.opening_kv if b == opening else None for b in ids]
        order = sorted((i for i in range(len(ids)) if out[i] is None), key=lambda i: -len(ids[i]))
        extra = len(opening) if opening else 0  # rows carry the opening before the block
        for batch in _batches(order, [len(b) + extra for b in ids], self.max_batch_tokens):
            for i, kv in zip(batch, self._encode_batch([ids[i] for i in batch])):
                out[i] = kv
        return out  # type: ignore[return-value]

    def encode_lead(self, token_ids: TokenIds) -> BlockKV:
        """A block as the prompt's first passage reads it under full attention: encoded right
        after the opening (gap 0), so a prompt that lays it first, straight after the opening, is
        exact there. Every other place needs encode_block's form (`gap` positions after the
        opening), so the two are different entries of one block. Without an opening a block reads
        nothing before it either way: encode_block."""
        if self.opening is None:
            return self.encode_block(token_ids)
        return self._encode_batch([self.token_ids(token_ids)], gap=0)[0]

    def encode_groups(self, blocks: Sequence[TokenIds], group_tokens: int
                      ) -> Iterator[tuple[list[TokenIds], list[BlockKV]]]:
        """encode_blocks over consecutive groups of about group_tokens real tokens (a longer block
        goes alone), yielding (group, its KV) as each finishes: for progress, metrics and writing
        results out before the next group is computed."""
        group: list[TokenIds] = []
        for n, block in enumerate(blocks):
            group.append(block)
            if n + 1 == len(blocks) or sum(map(len, group)) + len(blocks[n + 1]) > group_tokens:
                yield group, self.encode_blocks(group)
                group = []

    @torch.inference_mode()
    def _encode_batch(self, batch: list[tuple[int, ...]], start: int = 0, gap: int | None = None) -> list[BlockKV]:
        """start: first position of every block (0 for caching; the gate encodes at other offsets);
        gap: positions between the opening and the block (default the opening's own).

        With sinks, each row is [sink, block...] at start-1.. (the sink one position before the
        block), so the block's own keys come out at start.. exactly as without a sink. With an
        opening, each row is [opening, block...], the opening at start-gap-P.. and the block at
        start.., likewise.
        """
        if self.opening is not None:
            p, gap = len(self.opening.tokens), self.opening.gap if gap is None else gap
            rows = self._encode_rows([(*self.opening.tokens, *block) for block in batch], start - gap - p,
                                     gap_at=p, gap=gap)
            return [BlockKV(block, kv.keys[:, :, p:].contiguous(), kv.values[:, :, p:].contiguous())
                    for block, kv in zip(batch, rows)]
        if self.sink is None:
            return self._encode_rows(batch, start)
        rows = self._encode_rows([(self.sink_token_id, *block) for block in batch], start - 1)
        return [BlockKV(block, kv.keys[:, :, 1:].contiguous(), kv.values[:, :, 1:].contiguous())
                for block, kv in zip(batch, rows)]

    @torch.inference_mode()
    def _encode_rows(self, batch: list[tuple[int, ...]], start: int, gap_at: int = 0, gap: int = 0) -> list[BlockKV]:
        """Rows at positions start.., the columns from gap_at on `gap` positions further."""
        device, longest = self.device, max(len(b) for b in batch)
        ids = torch.zeros(len(batch), longest, dtype=torch.long)  # [B, Lmax]; id 0 pads (never attended)
        for row, block in enumerate(batch):
            ids[row, : len(block)] = torch.tensor(block)
        # a start below 0 (a sink before a block at 0) is fine: RoPE is a rotation by any angle
        positions = torch.arange(start, start + longest, device=device)
        positions[gap_at:] += gap
        positions = positions.expand(len(batch), -1)
        cache = DynamicCache()
        # the decoder alone: no lm_head, whose [B, L, vocab] output nobody reads here
        self.model.get_decoder()(input_ids=ids.to(device), position_ids=positions,
                                 past_key_values=cache, use_cache=True)
        # one copy per block: [layers, H, L, D] out of every layer's [B, H, Lmax, D]
        return [BlockKV(block, torch.stack([layer.keys[row, :, : len(block)] for layer in cache.layers]),
                        torch.stack([layer.values[row, :, : len(block)] for layer in cache.layers]))
                for row, block in enumerate(batch)]

    # -- prefill and decoding ------------------------------------------------------------------

    def prefill(self, kvs: Sequence[BlockKV], final_ids: TokenIds, *, logits_to_keep: int = 0,
                reserve_tokens: int = 0) -> PrefillOutput:
        """Rotate each block's keys to its offset, lay the blocks end to end, prefill the final block.

        logits_to_keep: 0 keeps every final-block position, k keeps the last k.
        reserve_tokens: spare cache rows for decoding after the prefill.
        """
        final = self.token_ids(final_ids)
        kvs, offsets, context = self.layout(kvs)
        if self.cuda_graphs:
            graphs = self._prefill_graphs()
            # None while a lone answer holds the workspace: this prompt goes eager
            done = graphs.prefill(list(kvs), offsets, context, final, self.reencoder, self.host_reads,
                                  reserve_tokens, self.buffers) if graphs.fits(context, len(final)) else None
            if done is not None:
                logits, cache = done
                if logits_to_keep:
                    logits = logits[-logits_to_keep:]
                return PrefillOutput(logits, cache, cached_tokens=context, computed_tokens=len(final))
        cache = BlockCache(self.num_layers, self.num_kv_heads, self.head_dim,
                           context + len(final) + reserve_tokens, self.dtype, self.device, self.buffers)
        with torch.inference_mode():
            placed, placed_at, feed = feed_for(kvs, offsets, self.reencoder, cache.key_buffer, cache.value_buffer,
                                               self.model, self.host_reads)
            cache.write_blocks(placed, placed_at, self.reencoder, self.host_reads)
            cache.set_length(context)
            with feed or contextlib.nullcontext():
                logits = self._forward(final, context, cache, logits_to_keep)
        return PrefillOutput(logits, cache, cached_tokens=context, computed_tokens=len(final))

    def _prefill_graphs(self):
        if self._graphs is None:
            from blockrag.attention.graphs import PrefillGraphs

            self._graphs = PrefillGraphs(self.model, self.num_layers, self.num_kv_heads, self.head_dim,
                                         self.graph_context_tokens, self.dtype, self.device,
                                         self.graph_decode_tokens, fused=self.decode_fusion)
        return self._graphs

    def full_prefill(self, token_ids: TokenIds, *, logits_to_keep: int = 0, reserve_tokens: int = 0) -> PrefillOutput:
        """Plain causal attention over the whole prompt: the baseline block attention is measured against."""
        return self.prefill([], token_ids, logits_to_keep=logits_to_keep, reserve_tokens=reserve_tokens)

    def generate(self, kvs: Sequence[BlockKV], final_ids: TokenIds, max_new_tokens: int = 32,
                 temperature: float = 0.0, *, stop_ids: Sequence[int] | None = None,
                 seed: int | None = None) -> Iterator[int]:
        """Stream new token ids after prefilling the final block over the cached blocks.

        Stops after max_new_tokens or before a stop id (default: the model's eos ids), which is
        not yielded. The prefill runs on the first next(), so timing it gives time to first token.
        """
        return self._generate(self.request(kvs, final_ids, max_new_tokens, temperature, stop_ids=stop_ids, seed=seed))

    def request(self, kvs: Sequence[BlockKV], final_ids: TokenIds, max_new_tokens: int = 32,
                temperature: float = 0.0, *, stop_ids: Sequence[int] | None = None,
                seed: int | None = None) -> GenerationRequest:
        """generate's arguments as one request (for a GenerationBatch too); the settings are
        checked here, token ids and blocks when the request is prefilled."""
        stops = self.stop_ids if stop_ids is None else frozenset(stop_ids)
        return GenerationRequest(tuple(kvs), final_ids, max_new_tokens, temperature, stops, seed)

    def batch(self, slots: int = 4, slot_tokens: int = 4096) -> GenerationBatch:
        """Many sequences at once (continuous batching), each greedy-equal to generate() alone;
        their caches come from `slots` slots of `slot_tokens` positions, allocated now
        (batch.py says how it schedules, kv_slots.py why slots)."""
        from blockrag.attention.batch import GenerationBatch

        return GenerationBatch(self, slots, slot_tokens)

    def _generate(self, request: GenerationRequest) -> Iterator[int]:
        if self.cuda_graphs and self.graph_decode_tokens:  # off: prefill() lays the blocks out, once
            final = self.token_ids(request.final_ids)
            kvs, offsets, context = self.layout(request.kvs)
            graphs = self._prefill_graphs()
            if graphs.hold(context, len(final), request.max_new_tokens):
                # the graph workspace, held for the whole answer: the graphed prefill, then one
                # graph replay per token (graphs.py); released when the answer ends, fails or is
                # abandoned (the generator closed or collected)
                try:
                    logits = graphs.prefill_held(kvs, offsets, context, final, self.reencoder, self.host_reads)
                    yield from self._tokens(request, logits[-1], context + len(final), graphs.decode)
                finally:
                    graphs.release()
                return
        out = self.prefill(request.kvs, request.final_ids, logits_to_keep=1, reserve_tokens=request.max_new_tokens)

        def step(token: int, position: int) -> torch.Tensor:
            with torch.inference_mode():
                return self._forward((token,), position, out.cache, 1)[-1]

        yield from self._tokens(request, out.logits[-1], out.cached_tokens + out.computed_tokens, step)

    def _tokens(self, request: GenerationRequest, logits: torch.Tensor, position: int,
                step: Callable[[int, int], torch.Tensor]) -> Iterator[int]:
        """Sample from the prefill's last logits [vocab], then step(token, position) -> the next
        logits, until a stop id (not yielded) or max_new_tokens."""
        generator = request.generator(self.device)
        for i in range(request.max_new_tokens):
            token = sample_token(logits, request.temperature, generator)
            if token in request.stop_ids:
                return
            yield token
            if i + 1 < request.max_new_tokens:
                logits = step(token, position)
                position += 1

    def _forward(self, ids: tuple[int, ...], start: int, cache: BlockCache, logits_to_keep: int) -> torch.Tensor:
        device = self.device
        input_ids = torch.tensor(ids, device=device)[None]  # [1, M]
        positions = torch.arange(start, start + len(ids), device=device)[None]
        # blockrag_final_block tells block_sdpa that the mask is the final block's lower-right
        # causal pattern, so on CUDA it may use the split-over-keys kernel
        out = self.model(input_ids=input_ids, position_ids=positions, past_key_values=cache,
                         use_cache=True, logits_to_keep=logits_to_keep, blockrag_final_block=True)
        return out.logits[0].float()  # [kept, vocab]

    # -- validation ----------------------------------------------------------------------------

    def layout(self, kvs: Sequence[BlockKV]) -> tuple[list[BlockKV], list[int], int]:
        """The blocks as a prompt lays them out (each after its sink, with sinks), where each
        starts, and the context length they take; InvalidBlockError for another model's block."""
        for kv in kvs:
            self._check_block(kv)
        if self.opening is not None and kvs and kvs[0].token_ids != self.opening.tokens:
            raise InvalidBlockError(
                "this engine encodes blocks after a shared opening, so a prompt's first block must be "
                f"that opening ({len(self.opening.tokens)} tokens); got a first block of {kvs[0].num_tokens} tokens")
        if self.sink is not None:  # [sink, block 1, sink, block 2, ...]: each block after its own sink
            kvs = [part for kv in kvs for part in (self.sink, kv)]
        ends = list(itertools.accumulate(kv.num_tokens for kv in kvs))
        offsets = [end - kv.num_tokens for end, kv in zip(ends, kvs)]  # where each block starts
        return list(kvs), offsets, ends[-1] if ends else 0

    def token_ids(self, ids: TokenIds) -> tuple[int, ...]:
        """ids as a tuple; InvalidBlockError if empty or outside the vocabulary."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        ids = tuple(int(t) for t in ids)
        if not ids:
            raise InvalidBlockError("a block or final prompt needs at least one token")
        if min(ids) < 0 or max(ids) >= self.vocab_size:
            raise InvalidBlockError(f"token ids must lie in [0, {self.vocab_size}); got {min(ids)}..{max(ids)}")
        return ids

    def _check_block(self, kv: BlockKV) -> None:
        expected = (self.num_layers, self.num_kv_heads, self.head_dim)
        if (kv.num_layers, kv.num_kv_heads, kv.head_dim) != expected:
            raise InvalidBlockError(
                f"block of {kv.num_tokens} tokens has KV geometry (layers, kv heads, head dim) "
                f"{(kv.num_layers, kv.num_kv_heads, kv.head_dim)}, the model needs {expected}: "
                "it was encoded by another model; re-encode it"
            )


def _batches(order: list[int], lengths: list[int], max_tokens: int) -> Iterator[list[int]]:
    """Consecutive groups of `order` (longest first) whose padded size, rows x longest row,
    stays within max_tokens; a block longer than max_tokens goes alone."""
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) + 1) * lengths[batch[0]] > max_tokens:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch
