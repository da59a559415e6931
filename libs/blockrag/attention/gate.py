"""The correctness gate: before a model is served, its cached-block path must match the masked
reference on random prompts. Re-encoding without such a check is how a KV-reuse system
silently garbled answers on some models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from blockrag.attention.reference import reference_logits
from blockrag.errors import EngineCorrectnessError

if TYPE_CHECKING:
    from blockrag.attention.engine import BlockAttentionEngine

# Bound on max|cached - reference| / max|reference| over the final block's logits. In fp32 the
# two paths differ only by summation order (~1e-6 measured); a wrong rotation or mask is off by
# 1e-1 or more. Half precision rounds the whole forward: bf16 has 8 mantissa bits (~4e-3 per op).
RELATIVE_ERROR_BOUND = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}

# (block lengths, final length) of the probe prompts; block 0 repeats at the end to check that
# the same KV may appear twice, and a 1-token block checks the smallest case.
_PROBES = (((7, 1, 13, 7), 5), ((16, 3), 9), ((2,), 4))


@dataclass(frozen=True)
class GateReport:
    """What the gate measured."""

    max_relative_error: float
    bound: float
    prompts: int


def check_engine(engine: BlockAttentionEngine, seed: int = 0) -> GateReport:
    """Compare the cached path with the reference on random prompts; raise if they disagree."""
    generator = torch.Generator().manual_seed(seed)
    vocab = engine.model.config.get_text_config().vocab_size
    bound = RELATIVE_ERROR_BOUND.get(engine.dtype, 5e-2)
    worst = 0.0
    for lengths, final_length in _PROBES:
        blocks = [torch.randint(vocab, (n,), generator=generator).tolist() for n in lengths[:-1] or lengths]
        if len(lengths) > 1:
            blocks.append(blocks[0] if lengths[-1] == lengths[0] else torch.randint(vocab, (lengths[-1],), generator=generator).tolist())
        final = torch.randint(vocab, (final_length,), generator=generator).tolist()
        cached = engine.prefill(engine.encode_blocks(blocks), final).logits
        reference = reference_logits(engine.model, blocks, final)
        error = float((cached - reference).abs().max() / reference.abs().max().clamp_min(1e-6))
        worst = max(worst, error)
    if not worst <= bound:  # also catches NaN
        raise EngineCorrectnessError(
            f"the cached-block path of {engine.model.config.model_type} disagrees with the masked "
            f"reference (relative error {worst:.3g} > {bound:g} in {engine.dtype}); this model's "
            "attention or rotary layout is not one the engine re-encodes correctly, so it is not served"
        )
    return GateReport(max_relative_error=worst, bound=bound, prompts=len(_PROBES))
