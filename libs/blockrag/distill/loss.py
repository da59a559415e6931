"""The distillation loss: per-token KL(teacher || student) in chunks of positions, token weights,
and the block fine-tuning baseline's cross-entropy.

The vocabulary is large (49K on the default model, 128K on Llama-3), so logits exist for
`chunk` positions at a time: [chunk, vocab] float32, never [tokens, vocab]. The student's
hidden states are detached into a leaf; each chunk's loss is backpropagated into that leaf
at once (freeing the chunk's logits), and the accumulated gradient is passed back through the
transformer in one backward at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Head = Callable[[torch.Tensor], torch.Tensor]  # hidden [c, H] -> logits [c, V]


@dataclass(frozen=True)
class LossParts:
    """Sums over one example's supervised positions (divide by their count for means)."""

    loss: float  # weighted, as optimised (KL for "kl", cross-entropy for "ce")
    kl: float  # unweighted KL(teacher || student), also under "ce" when a teacher was given
    tokens: int


def _log_probs(head: Head, hidden: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(head(hidden).float(), dim=-1)  # [c, V]


def token_kl(head: Head, teacher_hidden: torch.Tensor, other_hidden: torch.Tensor, chunk: int) -> torch.Tensor:
    """KL(p_teacher || p_other) per position, no gradient: [S] float32. hidden: [S, H]."""
    out = []
    with torch.no_grad():
        for s in range(0, teacher_hidden.shape[0], chunk):
            log_t = _log_probs(head, teacher_hidden[s : s + chunk])
            log_o = _log_probs(head, other_hidden[s : s + chunk])
            out.append((log_t.exp() * (log_t - log_o)).sum(-1))
    return torch.cat(out) if out else teacher_hidden.new_zeros(0, dtype=torch.float32)


def sensitivity_weights(divergence: torch.Tensor, strength: float) -> torch.Tensor:
    """Token weights from how much block attention moves the teacher at each token.

    divergence [S]: KL(teacher under full || teacher under block attention), detached. The
    weights are (1 - strength) + strength * divergence / mean(divergence): mean 1, so the loss
    keeps its scale, and strength 0 is uniform weighting.
    """
    divergence = divergence.detach().float()
    if strength == 0 or divergence.numel() == 0:
        return torch.ones_like(divergence)
    return (1 - strength) + strength * divergence / divergence.mean().clamp_min(1e-8)


def backward_kl(head: Head, student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                weights: torch.Tensor, chunk: int, scale: float,
                labels: torch.Tensor | None = None, label_weights: torch.Tensor | None = None) -> LossParts:
    """Backpropagate scale * sum_i [w_i KL(teacher_i || student_i) - h_i log p_student(label_i)]
    through student_hidden [S, H]; the second term only when labels [S] and their weights h [S]
    are given (hard labels: DistillConfig.hard_label_weight on the target tokens).

    teacher_hidden [S, H] carries no gradient. Returns the loss and KL sums (unscaled).
    """
    leaf = student_hidden.detach().requires_grad_()
    loss_sum, kl_sum = 0.0, 0.0
    for s in range(0, leaf.shape[0], chunk):
        log_s = _log_probs(head, leaf[s : s + chunk])
        with torch.no_grad():
            log_t = _log_probs(head, teacher_hidden[s : s + chunk])
        kl = (log_t.exp() * (log_t - log_s)).sum(-1)  # [c]
        weighted = (kl * weights[s : s + chunk]).sum()
        if labels is not None and label_weights is not None:
            ce = -log_s.gather(1, labels[s : s + chunk, None])[:, 0]  # [c]
            weighted = weighted + (ce * label_weights[s : s + chunk]).sum()
        (weighted * scale).backward()
        loss_sum += float(weighted.detach())
        kl_sum += float(kl.detach().sum())
    if leaf.grad is not None:
        student_hidden.backward(leaf.grad)
    return LossParts(loss_sum, kl_sum, int(leaf.shape[0]))


def backward_ce(head: Head, student_hidden: torch.Tensor, labels: torch.Tensor, chunk: int, scale: float) -> float:
    """Backpropagate scale * sum_i -log p_student(label_i) through student_hidden [S, H];
    returns the cross-entropy sum (unscaled)."""
    leaf = student_hidden.detach().requires_grad_()
    total = 0.0
    for s in range(0, leaf.shape[0], chunk):
        log_s = _log_probs(head, leaf[s : s + chunk])
        ce = -log_s.gather(1, labels[s : s + chunk, None]).sum()
        (ce * scale).backward()
        total += float(ce.detach())
    if leaf.grad is not None:
        student_hidden.backward(leaf.grad)
    return total
