"""The student and its teacher in one set of weights: base model + LoRA (peft).

The teacher is the student with its adapter switched off, so the base weights exist once.
Both read hidden states through the decoder alone; the loss applies the output head in
chunks (loss.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

from blockrag.attention.mask import additive_mask
from blockrag.distill.config import LoraSettings


def attach_lora(model: PreTrainedModel, settings: LoraSettings, seed: int = 0) -> PeftModel:
    """Wrap `model` (in place) with fresh adapters; only they are trainable. LoRA's B starts at
    zero, so the student starts as the base model."""
    torch.manual_seed(seed)  # LoRA's A initialisation
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.target_modules), bias="none")
    return get_peft_model(model, config)


@contextmanager
def teacher_mode(student: PeftModel) -> Iterator[None]:
    """Inside: the base model (adapter off), no gradients."""
    with student.disable_adapter(), torch.no_grad():
        yield


def decoder_hidden(model: PreTrainedModel | PeftModel, ids: torch.Tensor, positions: torch.Tensor | None = None,
                   allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Last hidden states [N, H] of one sequence ids [N] (after the final norm).

    allowed: bool [N, N] attention mask (True where q may attend k); None is plain causal.
    positions [N]: position ids (default 0..N-1).
    """
    decoder = model.get_decoder()
    device = ids.device
    positions = torch.arange(ids.numel(), device=device) if positions is None else positions
    dtype = next(decoder.parameters()).dtype
    mask = None if allowed is None else additive_mask(allowed.to(device), dtype)
    out = decoder(input_ids=ids[None], position_ids=positions[None], attention_mask=mask, use_cache=False)
    return out.last_hidden_state[0]


def decoder_hidden_batch(model: PreTrainedModel | PeftModel, ids: list[torch.Tensor],
                         positions: list[torch.Tensor] | None = None,
                         allowed: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """decoder_hidden of several sequences in one forward (fewer, larger kernels: a small model
    on a GPU is bound by kernel launches, not arithmetic). Returns [N_i, H] per sequence.

    The sequences are right-padded to the longest, N. A real token never sees padding (it lies
    after it; with `allowed`, its row is False there); padding rows attend causally, so no row
    of the mask is empty (an empty row is NaN in SDPA), and their outputs are dropped.
    """
    if len(ids) == 1:
        return [decoder_hidden(model, ids[0], None if positions is None else positions[0],
                               None if allowed is None else allowed[0])]
    decoder = model.get_decoder()
    device = ids[0].device
    lengths = [int(x.numel()) for x in ids]
    n = max(lengths)
    batch_ids = torch.zeros(len(ids), n, dtype=ids[0].dtype, device=device)
    batch_positions = torch.arange(n, device=device).repeat(len(ids), 1)
    for i, (x, m) in enumerate(zip(ids, lengths)):
        batch_ids[i, :m] = x
        if positions is not None:
            batch_positions[i, :m] = positions[i].to(device)
    mask = None
    if allowed is not None:
        grid = torch.ones(n, n, dtype=torch.bool).tril().repeat(len(ids), 1, 1)  # [B, N, N]
        for i, (a, m) in enumerate(zip(allowed, lengths)):
            grid[i, :m, :m] = a
            grid[i, :m, m:] = False
        dtype = next(decoder.parameters()).dtype
        mask = additive_mask(grid.to(device), dtype)[0, 0][:, None]  # [B, N, N] -> [B, 1, N, N]
    out = decoder(input_ids=batch_ids, position_ids=batch_positions, attention_mask=mask, use_cache=False)
    return [out.last_hidden_state[i, :m] for i, m in enumerate(lengths)]


def output_head(model: PreTrainedModel | PeftModel) -> torch.nn.Module:
    """hidden [c, H] -> logits [c, V] (the model's lm_head)."""
    return model.get_output_embeddings()


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
