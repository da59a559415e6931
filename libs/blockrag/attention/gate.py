"""The correctness gate: before a model is served, its cached-block path must match what the
model itself computes. Re-encoding without such a check is how a KV-reuse system silently
garbled answers on some models.

Two checks, both on random token ids:
- keys: a block encoded at positions 0..L-1 and rotated by o must equal the same block encoded
  at o..o+L-1 directly. Checked on the first layer, whose keys differ between the two only by
  the rotation, so the check stays sharp in bf16: a wrong rotary layout is off by O(1) (1.8
  measured on an interleaved-RoPE model), rounding by ~1e-2. (Deeper layers agree too, but
  carry the whole stack's rounding: 0.047 on a random 32-layer 8B model in bf16.)
- logits: prefill over cached blocks against the masked single-forward reference. Exact in fp32
  (1e-4); in half precision it catches gross errors only (a final block that cannot see its
  context is off by O(1)), because two bf16 computations of a deep model already differ by
  several percent (0.065 measured on a random Llama-3.1-8B shape, H200).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from blockrag.attention.reference import reference_logits
from blockrag.errors import EngineCorrectnessError

if TYPE_CHECKING:
    from blockrag.attention.engine import BlockAttentionEngine

# Bounds on max|cached - direct| / max|direct|. fp32 paths differ by summation order and by the
# model's own fp32 angle (p * inv_freq, ~1e-5 rad at the offsets probed): measured ~1e-6.
# bf16 has 8 mantissa bits (~4e-3 per rounding) and the two paths round differently.
KEY_ERROR_BOUND = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 3e-2}
LOGIT_ERROR_BOUND = {torch.float32: 1e-4, torch.float16: 1e-1, torch.bfloat16: 1.5e-1}

# (block lengths, final length) of the probe prompts; the first block repeats at the end (the
# same KV twice in one prompt) and a 1-token block checks the smallest case.
_PROBES = (((7, 1, 13), 5), ((16, 3), 9), ((2,), 4))
_KEY_OFFSETS = (1, 97)


@dataclass(frozen=True)
class GateReport:
    """What the gate measured (relative errors) and the bounds it held them to."""

    key_error: float
    logit_error: float
    key_bound: float
    logit_bound: float


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max|actual - expected| / max|expected|, in float32."""
    return float((actual.float() - expected.float()).abs().max() / expected.float().abs().max().clamp_min(1e-6))


def check_engine(engine: BlockAttentionEngine, seed: int = 0) -> GateReport:
    """Run both checks; raise EngineCorrectnessError if either is past its bound."""
    generator = torch.Generator().manual_seed(seed)
    vocab = engine.model.config.get_text_config().vocab_size

    def random_ids(n: int) -> list[int]:
        return torch.randint(vocab, (n,), generator=generator).tolist()

    key_error = 0.0
    block = tuple(random_ids(11))
    local = engine.encode_block(block)
    for offset in _KEY_OFFSETS:
        direct = engine._encode_batch([block], start=offset)[0]
        rotated = engine.reencoder.rotate(local.keys[:1], offset)  # layer 0: [1, H, L, D]
        key_error = max(key_error, relative_error(rotated, direct.keys[:1]))

    logit_error = 0.0
    for lengths, final_length in _PROBES:
        blocks = [random_ids(n) for n in lengths]
        blocks.append(blocks[0])
        if engine.opening is not None:  # every prompt opens with it
            blocks.insert(0, list(engine.opening.tokens))
        final = random_ids(final_length)
        cached = engine.prefill(engine.encode_blocks(blocks), final).logits
        reference = reference_logits(engine.model, blocks, final, engine.sink_token_id, engine.opening)
        logit_error = max(logit_error, relative_error(cached, reference))

    report = GateReport(key_error, logit_error, KEY_ERROR_BOUND.get(engine.dtype, 1e-1),
                        LOGIT_ERROR_BOUND.get(engine.dtype, 5e-2))
    if not (report.key_error <= report.key_bound and report.logit_error <= report.logit_bound):  # NaN fails too
        raise EngineCorrectnessError(
            f"the cached-block path of {engine.model.config.model_type} ({engine.dtype}) disagrees "
            f"with the model: key re-rotation error {report.key_error:.3g} (bound {report.key_bound:g}), "
            f"logit error {report.logit_error:.3g} (bound {report.logit_bound:g}). Its attention or "
            "rotary layout is not one the engine re-encodes correctly, so it is not served."
        )
    return report
