"""The masked single-forward reference that the cached-block path must equal.

One forward over the whole prompt with the prompt's position ids and the block mask (layout.py). It costs
a full prefill, so it serves tests, the correctness gate and nothing on the serving path.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

import torch
from transformers import PreTrainedModel

from blockrag.attention.layout import Opening, sequence_layout
from blockrag.attention.mask import additive_mask


@torch.inference_mode()
def reference_logits(model: PreTrainedModel, blocks: Sequence[Sequence[int]], final_ids: Sequence[int],
                     sink_token_id: int | None = None, opening: Opening | None = None,
                     global_blocks: Collection[int] = ()) -> torch.Tensor:
    """Logits [len(final_ids), vocab] (float32) of the final block under the block mask; with a
    sink token, every block starts with it (its first position, seen by that block only); with an
    opening, blocks[0] must be it and every other block is encoded right after it (layout.py).
    global_blocks: blocks that see everything before them (with an opening, {1} is the first
    passage read as full attention reads it: what engine.encode_lead gives)."""
    device = next(model.parameters()).device
    layout = sequence_layout(blocks, final_ids, sink_token_id=sink_token_id, opening=opening,
                             global_blocks=global_blocks)
    ids = torch.tensor(layout.ids, device=device)[None]
    positions = torch.tensor(layout.positions, device=device)[None]
    mask = additive_mask(layout.allowed.to(device), model.dtype)
    out = model(input_ids=ids, position_ids=positions, attention_mask=mask, use_cache=False)
    return out.logits[0, layout.index[-len(final_ids):]].float()


def reference_greedy(model: PreTrainedModel, blocks: Sequence[Sequence[int]], final_ids: Sequence[int],
                     max_new_tokens: int, stop_ids: Iterable[int] = (), sink_token_id: int | None = None,
                     opening: Opening | None = None, global_blocks: Collection[int] = ()) -> list[int]:
    """Greedy decoding under the block mask, recomputing the whole prompt at every step; generated
    tokens join the final block (they attend to everything)."""
    stops, generated = set(stop_ids), []
    for _ in range(max_new_tokens):
        token = int(reference_logits(model, blocks, [*final_ids, *generated], sink_token_id, opening,
                                     global_blocks)[-1].argmax())
        if token in stops:
            break
        generated.append(token)
    return generated
