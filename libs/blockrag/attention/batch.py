"""GenerationBatch: many answers at once over one engine (continuous batching).

A request waits until a KV slot is free. Each step:
1. decode: every running sequence feeds its last token; one forward of [B, 1] tokens, each row
   at its own position over its own cache, one token sampled per row;
2. prefill: waiting requests take free slots (in order, while k x the longest final block stays
   within the engine's max_batch_tokens), their blocks are placed into their slots, and their
   final blocks prefill together in one forward of [k, longest final block] tokens; each samples
   its first token. They join the decode of the next step.
A sequence leaves when it stops (a stop id, not emitted, or max_new_tokens) or is cancelled, and
its slot is free for the same step's prefill.

With engine.graph_batch_decode (CUDA graphs on a GPU) the decode step replays a graph per
batch-size bucket, captured when the batch is made (batch_graphs.py); the prefill of joining
requests stays eager.

Exactness: each row's attention sees only its own positions (BatchCache's mask) and its
sampling uses its own generator, seeded as generate() seeds it, so a sequence gets the tokens it
gets alone, greedy (up to float summation order in batched matmuls; tests/attention/test_batch.py
checks token equality on four architectures and the default model).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from blockrag.attention.batch_cache import BatchCache
from blockrag.attention.kv_slots import KVSlots
from blockrag.attention.placement import place_blocks
from blockrag.attention.sampling import sample_token
from blockrag.attention.sequence import GenerationRequest
from blockrag.errors import InvalidRequestError

if TYPE_CHECKING:
    from blockrag.attention.engine import BlockAttentionEngine


@dataclass
class _Sequence:
    """A running sequence: the slot row it holds, its filled length and the token it feeds next."""

    id: int
    request: GenerationRequest
    generator: torch.Generator | None
    row: int  # its row of the KV pool; the last row moves into any row released below it
    length: int = 0  # cache positions filled (context + final block + fed tokens)
    pending: int = 0  # the last emitted token, fed at the next decode
    emitted: int = 0


@dataclass
class StepOutput:
    """tokens: sequence id -> the token it emitted this step (at most one each); finished: the
    sequences that ended this step (after their last token, or with none)."""

    tokens: dict[int, int] = field(default_factory=dict)
    finished: list[int] = field(default_factory=list)


class GenerationBatch:
    """Sequences of one engine decoded together; see the module docstring for a step. One thread
    drives it (add, cancel, step): it holds no lock."""

    def __init__(self, engine: BlockAttentionEngine, slots: int, slot_tokens: int):
        self.engine = engine
        self.pool = KVSlots(slots, slot_tokens, engine.num_layers, engine.num_kv_heads, engine.head_dim,
                            engine.dtype, engine.device)
        self.cache = BatchCache(self.pool)
        self.graphs = None
        if engine.graph_batch_decode and engine.cuda_graphs and engine.device.type == "cuda":
            from blockrag.attention.batch_graphs import BatchDecodeGraphs

            self.graphs = BatchDecodeGraphs(engine.model, self.cache, engine.decode_fusion)  # captured now, while no slot is in use
        self.waiting: deque[tuple[int, GenerationRequest, tuple[int, ...]]] = deque()
        self.running: list[_Sequence] = []  # running[i].row == i
        self._ids = itertools.count()

    def add(self, request: GenerationRequest) -> int:
        """Queue a request (engine.request builds one); returns its sequence id. Token ids, block
        geometry and the slot size are checked now: InvalidBlockError / InvalidRequestError."""
        final = self.engine.token_ids(request.final_ids)
        _, _, context = self.engine.layout(request.kvs)
        needed = context + len(final) + request.max_new_tokens
        if needed > self.pool.slot_tokens:
            raise InvalidRequestError(
                f"the request needs {needed} cache positions (context {context}, final block {len(final)}, "
                f"max_new_tokens {request.max_new_tokens}); a slot holds {self.pool.slot_tokens}: lower "
                "max_new_tokens or the context, or make the batch with larger slots")
        seq_id = next(self._ids)
        self.waiting.append((seq_id, request, final))
        return seq_id

    def cancel(self, seq_id: int) -> bool:
        """Drop a waiting or running sequence now (its slot is free at once); False if unknown."""
        for item in self.waiting:
            if item[0] == seq_id:
                self.waiting.remove(item)
                return True
        seq = next((s for s in self.running if s.id == seq_id), None)
        if seq is not None:
            self._leave(seq)
        return seq is not None

    def __len__(self) -> int:
        """Sequences waiting or running."""
        return len(self.waiting) + len(self.running)

    def step(self) -> StepOutput:
        """One decode step of the running sequences, then the prefill of those that fit."""
        out = StepOutput()
        with torch.inference_mode():
            if self.running:
                self._decode(out)
            if self.waiting and self.pool.free:
                self._prefill(out)
        return out

    def run(self) -> Iterator[StepOutput]:
        """step() until nothing waits or runs."""
        while self:
            yield self.step()

    # -- the two phases -----------------------------------------------------------------------

    def _decode(self, out: StepOutput) -> None:
        lengths = [s.length for s in self.running]
        if self.graphs is not None:
            logits = self.graphs.decode([s.pending for s in self.running], lengths)  # [B, vocab]
        else:
            mask = self.cache.prepare(0, lengths, 1)
            device = self.engine.device
            ids = torch.tensor([[s.pending] for s in self.running], device=device)  # [B, 1]
            positions = torch.tensor(lengths, device=device)[:, None]
            logits = self._forward(ids, positions, mask, 1)[:, -1]  # [B, vocab]
        batch = list(self.running)
        for seq in batch:  # every length first: a sequence that leaves moves the last row's KV
            seq.length += 1
        self._emit_all(batch, logits, out)

    def _prefill(self, out: StepOutput) -> None:
        admitted: list[tuple[_Sequence, tuple[int, ...]]] = []
        try:
            self._admit(admitted, out)
        except BaseException as e:  # a failed placement or forward must not keep the slots it took
            for seq, _ in admitted:
                if any(s is seq for s in self.running):
                    self._leave(seq)
            e.add_note(f"sequences dropped unstarted: {[seq.id for seq, _ in admitted]}")
            raise

    def _admit(self, admitted: list, out: StepOutput) -> None:
        """Take waiting requests while slots are free and their padded final blocks stay within
        the engine's max_batch_tokens (one at least); place their blocks; prefill them together."""
        longest = 0
        while self.waiting and self.pool.free:
            seq_id, request, final = self.waiting[0]
            if admitted and (len(admitted) + 1) * max(longest, len(final)) > self.engine.max_batch_tokens:
                break
            self.waiting.popleft()
            longest = max(longest, len(final))
            seq = _Sequence(seq_id, request, request.generator(self.engine.device), self.pool.acquire())
            kvs, offsets, context = self.engine.layout(request.kvs)
            place_blocks(kvs, offsets, self.engine.reencoder, *self.pool.slot(seq.row), self.engine.host_reads)
            seq.length = context
            self.running.append(seq)
            admitted.append((seq, final))
        device = self.engine.device
        ids = torch.zeros(len(admitted), longest, dtype=torch.long)  # [k, M]; id 0 pads, after every real token
        for i, (_, final) in enumerate(admitted):
            ids[i, : len(final)] = torch.tensor(final)
        lengths = [seq.length for seq, _ in admitted]
        mask = self.cache.prepare(admitted[0][0].row, lengths, longest)
        positions = torch.tensor(lengths, device=device)[:, None] + torch.arange(longest, device=device)[None]
        last = torch.tensor([[len(final) - 1] for _, final in admitted], device=device)  # [k, 1]: each row's last real token
        logits = self._forward(ids.to(device), positions, mask, last)[:, 0]  # [k, vocab]
        for seq, final in admitted:
            seq.length += len(final)
        self._emit_all([seq for seq, _ in admitted], logits, out)

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                 logits_to_keep: int | torch.Tensor) -> torch.Tensor:
        """ids, positions: [B, M]; mask: [B, 1, M, N] -> logits [B, kept, vocab] float32."""
        out = self.engine.model(input_ids=ids, position_ids=positions, attention_mask=mask,
                                past_key_values=self.cache, use_cache=True, logits_to_keep=logits_to_keep)
        return out.logits.float()

    # -- sequences ----------------------------------------------------------------------------

    def _emit_all(self, batch: list[_Sequence], logits: torch.Tensor, out: StepOutput) -> None:
        """logits: [B, vocab], row i for batch[i]. Greedy rows take one argmax over the batch (one
        device sync, not one per row; ties go to the first index, as sample_token's argmax)."""
        greedy = logits.argmax(-1).tolist() if any(s.request.temperature == 0 for s in batch) else []
        for i, seq in enumerate(batch):
            temperature = seq.request.temperature
            self._emit(seq, greedy[i] if temperature == 0 else sample_token(logits[i], temperature, seq.generator), out)

    def _emit(self, seq: _Sequence, token: int, out: StepOutput) -> None:
        """Take seq's next token as generate() does: a stop id ends it unemitted; the
        max_new_tokens-th token ends it after being emitted."""
        if token not in seq.request.stop_ids:
            out.tokens[seq.id] = token
            seq.emitted += 1
            seq.pending = token
        if token in seq.request.stop_ids or seq.emitted == seq.request.max_new_tokens:
            out.finished.append(seq.id)
            self._leave(seq)

    def _leave(self, seq: _Sequence) -> None:
        last = self.running[-1]
        if self.pool.release(seq.row, last.length) is not None:
            last.row = seq.row
            self.running[seq.row] = last
        self.running.pop()
