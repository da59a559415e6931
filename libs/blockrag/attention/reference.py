"""The masked single-forward reference that the cached-block path must equal.

One forward over the whole prompt with global position ids 0..N-1 and the block mask. It costs
a full prefill, so it serves tests, the correctness gate and nothing on the serving path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from transformers import PreTrainedModel

from blockrag.attention.mask import additive_mask, block_mask


@torch.inference_mode()
def reference_logits(model: PreTrainedModel, blocks: Sequence[Sequence[int]], final_ids: Sequence[int],
                     sink_token_id: int | None = None) -> torch.Tensor:
    """Logits [len(final_ids), vocab] (float32) of the final block under the block mask; with a
    sink token, every block starts with it (its first position, seen by that block only)."""
    device = next(model.parameters()).device
    if sink_token_id is not None:
        blocks = [[sink_token_id, *b] for b in blocks]
    lengths = [len(b) for b in blocks]
    ids = torch.tensor([t for b in blocks for t in b] + list(final_ids), device=device)[None]
    n = ids.shape[1]
    mask = additive_mask(block_mask(lengths, len(final_ids), device=device), model.dtype)
    positions = torch.arange(n, device=device)[None]
    out = model(input_ids=ids, position_ids=positions, attention_mask=mask, use_cache=False,
                logits_to_keep=len(final_ids))
    return out.logits[0].float()


def reference_greedy(model: PreTrainedModel, blocks: Sequence[Sequence[int]], final_ids: Sequence[int],
                     max_new_tokens: int, stop_ids: Iterable[int] = (), sink_token_id: int | None = None) -> list[int]:
    """Greedy decoding under the block mask, recomputing the whole prompt at every step; generated
    tokens join the final block (they attend to everything)."""
    stops, generated = set(stop_ids), []
    for _ in range(max_new_tokens):
        token = int(reference_logits(model, blocks, [*final_ids, *generated], sink_token_id)[-1].argmax())
        if token in stops:
            break
        generated.append(token)
    return generated
