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

DEFAULT_WIDTHS = (64, 128, 256, 512)
PER_WIDTH = 3  # cos, z, depth


def depth_scores(similarity: np.ndarray) -> np.ndarray:
    """(left peak - s) + (right peak - s) per gap, each peak reached by climbing from the gap
    while the next value is not lower (linear: a gap's climb continues its neighbour's)."""
    n = len(similarity)
    left, right = similarity.copy(), similarity.copy()
    for i in range(1, n):
        if similarity[i - 1] >= similarity[i]:
            left[i] = left[i - 1]
    for i in range(n - 2, -1, -1):
        if similarity[i + 1] >= similarity[i]:
            right[i] = right[i + 1]
    return left + right - 2 * similarity


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


# Unit features (format 4). The token states above are read in windows that straddle the cut, so
# each side has already attended to the other and a topic shift is blurred; the embedding-
# similarity baseline, which embeds each side on its own, finds prose shifts better (prose-dev Pk
# 0.195 against 0.242). So each unit (the text between two consecutive candidates) is also
# embedded alone, once, and for each width W (words) the unit vectors within W words before and
# after a cut are averaged, weighted by their words: both sides are read apart, at any width, for
# one extra encoder pass over the text.
DEFAULT_UNIT_WIDTHS = (25, 50, 100, 200, 400)


def unit_similarity_features(vectors: torch.Tensor, words: list[int], widths: tuple[int, ...] | list[int]) -> torch.Tensor:
    """[n_units - 1, PER_WIDTH * len(widths)] float32 from unit vectors [n_units, hidden] (each unit
    embedded alone) and the units' word counts; row j is the gap between unit j and unit j + 1
    (candidate j). Per width W: (cos, z, depth) of the word-weighted means of the units within W
    words before and after the gap, at least one unit a side."""
    n = vectors.shape[0]
    m = max(n - 1, 0)
    out = torch.zeros(m, PER_WIDTH * len(widths))
    if m == 0:
        return out
    weight = torch.tensor(words, dtype=torch.float64).clamp(min=0)  # [n]
    weighted = vectors.double() * weight.unsqueeze(1)
    prefix = torch.cat([torch.zeros(1, vectors.shape[1], dtype=torch.float64), weighted.cumsum(0)])  # [n + 1, hidden]
    total = torch.cat([torch.zeros(1, dtype=torch.float64), weight.cumsum(0)])  # [n + 1]: words before unit i
    b = torch.arange(1, n)  # boundary before unit b (gap j = b - 1)
    for k, w in enumerate(widths):
        # first unit of the left window: the earliest a with words(a..b-1) <= w, but at most b - 1;
        # last unit (exclusive) of the right window: the latest c with words(b..c-1) <= w, at least b + 1
        lo = torch.minimum(torch.searchsorted(total, total[b] - w, side="left"), b - 1)
        hi = torch.maximum(torch.searchsorted(total, total[b] + w, side="right") - 1, b + 1).clamp(max=n)
        left, right = prefix[b] - prefix[lo], prefix[hi] - prefix[b]  # [m, hidden]
        _put_width(out, k, torch.nn.functional.cosine_similarity(left, right, dim=1, eps=1e-8))
    return out


def _put_width(out: torch.Tensor, k: int, cos: torch.Tensor) -> None:
    """Width k's columns of `out` [m, PER_WIDTH * widths] from its gaps' cosines [m]: the
    cosine, its z-score within the text and its TextTiling depth."""
    std = float(cos.std(unbiased=False)) if cos.shape[0] > 1 else 0.0
    out[:, PER_WIDTH * k] = cos.float()
    out[:, PER_WIDTH * k + 1] = ((cos - cos.mean()) / (std + 1e-3)).float()
    out[:, PER_WIDTH * k + 2] = torch.from_numpy(depth_scores(cos.numpy())).float()


# Window features (format 5). The embedding-similarity baseline, which embeds the text of the few
# units either side of a gap as ONE text, cut prose-dev at Pk 0.108 with a tuned cutoff, where the
# best unit-feature column (unit vectors averaged) reached 0.134: one pass over a few sentences
# together reads a topic better than an average of sentences read apart. So the head gets the
# baseline's own signal too, per window of W units.
DEFAULT_WINDOW_UNITS = (3,)


def window_similarity_features(embed, texts: list[str], widths: tuple[int, ...] | list[int]) -> torch.Tensor:
    """[n_units - 1, PER_WIDTH * len(widths)] float32 from the unit texts (in order) and
    `embed(list[str]) -> [k, hidden]` (normalised rows): row j is the gap between unit j and
    unit j + 1; per width W (units), (cos, z, depth) of the embeddings of the joined text of the
    W units before and the W units after the gap (fewer at either end), each distinct window
    text embedded once."""
    n = len(texts)
    m = max(n - 1, 0)
    out = torch.zeros(m, PER_WIDTH * len(widths))
    if m == 0:
        return out
    for k, w in enumerate(widths):
        windows = _windows(texts, w)
        row: dict[str, int] = {}
        for pair in windows:
            for window in pair:
                row.setdefault(window, len(row))
        vectors = torch.as_tensor(np.asarray(embed(list(row)), dtype=np.float64))  # [windows, hidden]
        vectors = torch.nn.functional.normalize(vectors, dim=1)
        left = vectors[[row[a] for a, _ in windows]]  # [m, hidden]
        right = vectors[[row[b] for _, b in windows]]
        _put_width(out, k, (left * right).sum(1))  # cosines [m] of normalised rows
    return out


def window_texts(texts: list[str], widths: tuple[int, ...] | list[int]) -> list[str]:
    """Every window text `window_similarity_features` embeds for these unit texts, in order of
    first use (so that the windows of many texts can be embedded in one batch beforehand)."""
    seen: dict[str, None] = {}
    for w in widths:
        for pair in _windows(texts, w):
            seen.update(dict.fromkeys(pair))
    return list(seen)


def _windows(texts: list[str], w: int) -> list[tuple[str, str]]:
    """Per gap g (1..n-1): the joined text of the w units before it and of the w units after it."""
    n = len(texts)
    return [(" ".join(texts[max(0, g - w):g]), " ".join(texts[g:min(n, g + w)])) for g in range(1, n)]
