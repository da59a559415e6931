"""Content-shift features of a candidate cut: how alike the text either side of it is, over wide
windows.

The boundary head's backbone features see 32 tokens either side of a cut, and a layout cue
(blank line, heading, indentation) usually settles a cut there; in prose, where every paragraph
break looks the same, only a shift of topic over a few hundred words tells a segment end. So for
each width W (tokens) the backbone's token states are mean-pooled over the W tokens before and
the W tokens after the cut (the sentence-transformers pooling of all-MiniLM-L6-v2, read from the
windows the backbone already ran, so no extra encoder pass), and per width the head gets:

- cos: the cosine of the two means;
- z: cos standardised over the candidates of the text (a cutoff relative to the text, as the
  embedding-similarity baseline's mean - std/2);
- depth: TextTiling's depth score of cos over the sequence of candidates (how far it dips below
  the peaks either side).
"""

from __future__ import annotations

import numpy as np
import torch

from blockrag.segment.baselines import depth_scores

DEFAULT_WIDTHS = (64, 128, 256, 512)
PER_WIDTH = 3  # cos, z, depth


def similarity_features(states: torch.Tensor, cuts: list[int], widths: tuple[int, ...] | list[int]) -> torch.Tensor:
    """[len(cuts), PER_WIDTH * len(widths)] float32 from token states [n_tokens, hidden]; cut j lies
    just before token cuts[j] (1 <= cuts[j] <= n_tokens - 1). Columns: per width, (cos, z, depth)."""
    m = len(cuts)
    out = torch.zeros(m, PER_WIDTH * len(widths))
    n = states.shape[0]
    if m == 0 or n < 2:
        return out
    prefix = torch.cat([torch.zeros(1, states.shape[1]), states.double().cumsum(0)])  # [n + 1, hidden]
    t = torch.tensor(cuts, dtype=torch.long).clamp(1, n - 1)  # [m]
    for k, w in enumerate(widths):
        lo, hi = (t - w).clamp(min=0), (t + w).clamp(max=n)
        left = (prefix[t] - prefix[lo]) / (t - lo).unsqueeze(1)     # [m, hidden]
        right = (prefix[hi] - prefix[t]) / (hi - t).unsqueeze(1)
        cos = torch.nn.functional.cosine_similarity(left, right, dim=1)  # [m]
        std = float(cos.std(unbiased=False)) if m > 1 else 0.0
        z = (cos - cos.mean()) / (std + 1e-3)
        depth = torch.from_numpy(depth_scores(cos.numpy().astype(np.float64)))
        out[:, PER_WIDTH * k] = cos.float()
        out[:, PER_WIDTH * k + 1] = z.float()
        out[:, PER_WIDTH * k + 2] = depth.float()
    return out
