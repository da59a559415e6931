"""The teacher's answers: the base model under full attention, greedy, many prompts at once.

Building training examples means one greedy answer per question prompt. One prompt at a time
(the engine's own `generate`) a GPU spends its time on kernel launches; here a batch of prompts
is left-padded into one prefill and then decoded together, one token per step for all of them,
with a KV cache. Left padding puts every prompt's last token in the same column, so each step
appends one column for the whole batch. A pad never takes part: its key is masked for every
query, and its own query row attends to itself only (an empty row is NaN in SDPA).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from transformers import DynamicCache, PreTrainedModel

from blockrag.attention.mask import additive_mask
from blockrag.distill.fidelity import ended_answer


def greedy_answers(model: PreTrainedModel, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   stop_ids: Collection[int], batch_size: int = 32) -> list[list[int]]:
    """Each prompt's greedy answer, as `fidelity.greedy_answer` gives it (`ended_answer`).
    Prompts are grouped by length (less padding); the answers come back in the prompts' order."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        for i, answer in zip(chunk, _decode([prompts[i] for i in chunk], model, max_new_tokens, stop_ids)):
            answers[i] = answer
    return answers


@torch.inference_mode()
def _decode(prompts: Sequence[Sequence[int]], model: PreTrainedModel, max_new_tokens: int,
            stop_ids: Collection[int]) -> list[list[int]]:
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    n, width = len(prompts), max(map(len, prompts))
    ids = torch.zeros(n, width, dtype=torch.long)
    real = torch.zeros(n, width, dtype=torch.bool)  # [B, L]: False on the left padding
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(list(prompt))
        real[row, width - len(prompt) :] = True
    positions = (real.long().cumsum(1) - 1).clamp_min(0)  # [B, L]: each prompt from 0
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = (causal[None] & real[:, None, :]) | torch.eye(width, dtype=torch.bool)[None]  # [B, L, L]
    mask = additive_mask(allowed.to(device), dtype)[0, 0][:, None]  # [B, 1, L, L]
    cache = DynamicCache()
    out = model(input_ids=ids.to(device), position_ids=positions.to(device), attention_mask=mask,
                past_key_values=cache, use_cache=True, logits_to_keep=1)
    keys = real.to(device)  # [B, K]: which cached keys are real
    next_position = positions[:, -1:].to(device) + 1  # [B, 1]
    stops = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
    tokens, done = [], torch.zeros(n, dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        token = out.logits[:, -1].argmax(-1)  # [B]
        tokens.append(token)
        done |= torch.isin(token, stops)
        if step + 1 == max_new_tokens or bool(done.all()):
            break
        keys = torch.cat([keys, torch.ones(n, 1, dtype=torch.bool, device=device)], 1)
        step_mask = additive_mask(keys[:, None, :], dtype)[0, 0][:, None]  # [B, 1, 1, K]
        out = model(input_ids=token[:, None], position_ids=next_position, attention_mask=step_mask,
                    past_key_values=cache, use_cache=True)
        next_position = next_position + 1
    return [ended_answer(row, max_new_tokens, stop_ids) for row in torch.stack(tokens, 1).tolist()]  # [B, steps]
