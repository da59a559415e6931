"""BoundaryModel: a frozen backbone plus a small trained head that scores each candidate cut.

The head sees the backbone's features of a candidate (backbone.py) and the candidate's kind
(paragraph, heading, code, turn, line, sentence; one-hot), and gives the probability that the
text should be cut there. Only the head is trained, so training on a CPU takes minutes and the
shipped weights are small; the backbone comes from its own package.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import safetensors.torch
from safetensors import SafetensorError
import torch
from torch import nn

from blockrag.errors import ModelLoadError
from blockrag.segment.backbone import Backbone
from blockrag.segment.candidates import KINDS, Candidate, find_candidates, units
from blockrag.segment.similarity import (PER_WIDTH, unit_similarity_features, window_similarity_features,
                                         window_texts)

FORMAT = 5  # 2: pooled context, cosine and layout features; 3: + wide-window similarity (similarity.py);
# 4: + unit similarity (each unit embedded alone, similarity.py) and suppression of non-maximal cuts;
# 5: + window similarity (the text of a few units either side embedded as one, similarity.py)
READABLE_FORMATS = (2, 3, 4, 5)
C = TypeVar("C")


@dataclass
class BoundaryConfig:
    """What a trained head was made with; stored beside its weights."""

    backbone: str
    backbone_kind: str
    feature_size: int
    hidden: int = 256
    threshold: float = 0.5  # chosen on validation data: the cut probability at granularity 0.5
    window: int = 256
    overlap: int = 64
    format: int = FORMAT
    similarity_widths: list[int] = field(default_factory=list)  # empty: no similarity features
    unit_widths: list[int] = field(default_factory=list)  # words; empty: no unit similarity features
    window_units: list[int] = field(default_factory=list)  # units; empty: no window similarity features
    fusion_hidden: int = 0  # 0: a linear fusion; else an MLP fusion of this width (BoundaryHead)
    suppress: int = 0  # a cut must be the most likely within this many candidates either side
    training: dict = field(default_factory=dict)  # data, epochs, validation scores


class BoundaryHead(nn.Module):
    """[n, feature_size + len(KINDS) + GAP_FEATURES + similarity + unit] -> [n] logits.

    The MLP `net` reads every column but the last `unit` (the unit similarity features); with unit
    features (format 4), logit = scale * net(x) + fusion(unit features, kind one-hot): a linear
    term over the content shift read with both sides apart, per candidate kind's bias, that can be
    fitted on top of a trained `net` (scale starts at 1 and fusion at 0, so before fitting the
    head is `net` alone) or with it. Format 5 adds window similarity columns to the unit ones, and
    with fusion_hidden the fusion is a small MLP over the net's logit, the unit and window
    similarity, the kind and layout and the wide-window similarity (`fusion_rows`).
    """

    def __init__(self, feature_size: int, hidden: int = 256, dropout: float = 0.1, similarity: int = 0,
                 unit: int = 0, fusion_hidden: int = 0):
        super().__init__()
        self.feature_size, self.unit, self.similarity = feature_size, unit, similarity
        width = feature_size + len(KINDS) + GAP_FEATURES + similarity
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden),
                                 nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
        if unit:
            self.scale = nn.Parameter(torch.ones(()))
            if fusion_hidden:
                # format 5 with an MLP fusion: it reads the net's logit, the unit and window
                # similarity, the kind and layout, and the wide-window similarity; a linear fusion
                # let the layout-blind similarity columns shift every kind alike, so a dialogue turn
                # could not be cut (held-out dialogue Pk 0.20 linear, 0.10 with 16 hidden units)
                self.fusion = nn.Sequential(nn.LayerNorm(self.fusion_inputs), nn.Linear(self.fusion_inputs, fusion_hidden),
                                            nn.GELU(), nn.Linear(fusion_hidden, 1))
                nn.init.zeros_(self.fusion[-1].weight)
                nn.init.zeros_(self.fusion[-1].bias)
            else:
                self.fusion = nn.Linear(unit + len(KINDS), 1)
                nn.init.zeros_(self.fusion.weight)
                nn.init.zeros_(self.fusion.bias)
        self.fusion_hidden = fusion_hidden if unit else 0

    @property
    def fusion_inputs(self) -> int:
        """Columns of the MLP fusion: net logit, unit (+ window), kind + layout, wide-window similarity."""
        return 1 + self.unit + len(KINDS) + GAP_FEATURES + self.similarity

    def fusion_rows(self, x: torch.Tensor, net_logit: torch.Tensor) -> torch.Tensor:
        """[n, fusion_inputs] for the MLP fusion, from head inputs x and the net's logits [n]."""
        layout = x[:, self.feature_size:self.feature_size + len(KINDS) + GAP_FEATURES]
        similarity = x[:, -self.unit - self.similarity:-self.unit]
        return torch.cat([net_logit.unsqueeze(1), x[:, -self.unit:], layout, similarity], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.unit:
            return self.net(x).squeeze(-1)
        main, unit = x[:, :-self.unit], x[:, -self.unit:]
        net_logit = self.net(main).squeeze(-1)  # [n]
        if self.fusion_hidden:
            return self.scale * net_logit + self.fusion(self.fusion_rows(x, net_logit)).squeeze(-1)
        kinds = x[:, self.feature_size:self.feature_size + len(KINDS)]
        return self.scale * net_logit + self.fusion(torch.cat([unit, kinds], dim=1)).squeeze(-1)


GAP_FEATURES = 8


def kind_one_hot(candidates: list[Candidate], text: str | None = None) -> torch.Tensor:
    """[n, len(KINDS) + GAP_FEATURES]: the candidate's kind, one-hot, and the layout around it
    (text=None: zeros), which the backbone's tokens do not show: unit lengths, blank lines,
    indentation, how the previous unit ends and the next begins."""
    out = torch.zeros(len(candidates), len(KINDS) + GAP_FEATURES)
    offsets = [c.offset for c in candidates]
    for i, c in enumerate(candidates):
        out[i, KINDS.index(c.kind)] = 1.0
        if text is None:
            continue
        prev_start = offsets[i - 1] if i else 0
        next_end = offsets[i + 1] if i + 1 < len(offsets) else len(text)
        before = text[prev_start:c.offset].rstrip()
        gap = text[len(before) + prev_start:c.offset]
        line_start = text.rfind("\n", 0, c.offset) + 1
        after = text[c.offset:next_end]
        out[i, len(KINDS):] = torch.tensor([
            math.log1p(len(before)) / 10, math.log1p(len(after)) / 10, min(gap.count("\n"), 3) / 3,
            float(c.offset - line_start == 0 and line_start > 0 and text[line_start - 1] == "\n"),  # at column 0
            float(before[-1:] in ".!?"), float(before[-1:] in ":,;({[\\"), float(after[:1].isupper()),
            float(after[:1] in "#<`=-*@[/"),
        ])
    return out


def unit_features(backbone: Backbone, text: str, candidates: list[Candidate],
                  widths: list[int] | tuple[int, ...], window_units: list[int] | tuple[int, ...] = ()) -> torch.Tensor:
    """[len(candidates), PER_WIDTH * (len(widths) + len(window_units))]: the unit similarity
    features (similarity.py) of each candidate, every unit between two candidates embedded alone,
    then the window similarity features, the units either side embedded together."""
    return unit_features_many(backbone, [text], [candidates], widths, window_units)[0]


def unit_features_many(backbone: Backbone, texts: list[str], candidates: list[list[Candidate]],
                       widths: list[int] | tuple[int, ...],
                       window_units: list[int] | tuple[int, ...] = ()) -> list[torch.Tensor]:
    """`unit_features` of each text; the units (and the windows) of every text are embedded in
    one run of the encoder, batched across the texts."""
    columns = PER_WIDTH * (len(widths) + len(window_units))
    unit_texts = [[text[s:e].strip() for s, e in units(text, found)] if found and columns else []
                  for text, found in zip(texts, candidates)]
    parts: list[list[torch.Tensor]] = [[] for _ in texts]
    if widths:
        for k, (ts, mine) in enumerate(zip(unit_texts, backbone.unit_vectors_many(unit_texts))):
            if ts:
                parts[k].append(unit_similarity_features(mine, [len(t.split()) for t in ts], widths))
    if window_units:
        needed = list(dict.fromkeys(w for ts in unit_texts for w in window_texts(ts, window_units)))
        embedded = backbone.embed(needed)  # [windows, hidden]
        row = {w: i for i, w in enumerate(needed)}

        def lookup(windows: list[str]):
            return embedded[[row[w] for w in windows]]

        for k, ts in enumerate(unit_texts):
            if ts:
                parts[k].append(window_similarity_features(lookup, ts, window_units))
    return [torch.cat(p, dim=1) if p else torch.zeros(len(found), columns) for p, found in zip(parts, candidates)]


def head_inputs(backbone: Backbone, text: str, candidates: list[Candidate], widths: list[int] | tuple[int, ...] = (),
                unit_widths: list[int] | tuple[int, ...] = (),
                window_units: list[int] | tuple[int, ...] = ()) -> torch.Tensor:
    """The head's input rows for the candidates of one text: backbone features, kind and layout,
    then the wide-window similarity features, the unit and the window similarity features the
    head has (the last two read by its fusion term)."""
    return head_inputs_many(backbone, [text], [candidates], widths, unit_widths, window_units)[0]


def head_inputs_many(backbone: Backbone, texts: list[str], candidates: list[list[Candidate]],
                     widths: list[int] | tuple[int, ...] = (), unit_widths: list[int] | tuple[int, ...] = (),
                     window_units: list[int] | tuple[int, ...] = ()) -> list[torch.Tensor]:
    """`head_inputs` of each text, every encoder pass batched across the texts."""
    read = backbone.read_many(texts, [[c.offset for c in found] for found in candidates], widths)
    unit = unit_features_many(backbone, texts, candidates, unit_widths, window_units)
    return [torch.cat([features, kind_one_hot(found, text), similarity, u], dim=1)
            for text, found, (features, similarity), u in zip(texts, candidates, read, unit)]


class BoundaryModel:
    def __init__(self, backbone: Backbone, head: BoundaryHead, config: BoundaryConfig):
        self.backbone, self.head, self.config = backbone, head.eval(), config

    def inputs(self, text: str, candidates: list[Candidate]) -> torch.Tensor:
        """The head's input rows for the candidates of one text: backbone features, kind and
        layout, then the wide-window similarity features when the head was trained with them."""
        return head_inputs(self.backbone, text, candidates, self.config.similarity_widths, self.config.unit_widths,
                           self.config.window_units)

    def probabilities(self, text: str) -> tuple[list[Candidate], torch.Tensor]:
        """The candidates of the text and the probability of a cut at each ([n] float32)."""
        return self.probabilities_many([text])[0]

    @torch.inference_mode()
    def probabilities_many(self, texts: list[str]) -> list[tuple[list[Candidate], torch.Tensor]]:
        """`probabilities` of each text, the encoder's passes batched across the texts (one
        padded batch per chunk of windows or units, whichever text they come from)."""
        candidates = [find_candidates(text) for text in texts]
        kept = [k for k, found in enumerate(candidates) if found]
        out: list[tuple[list[Candidate], torch.Tensor]] = [([], torch.zeros(0)) for _ in texts]
        if not kept:
            return out
        c = self.config
        rows = head_inputs_many(self.backbone, [texts[k] for k in kept], [candidates[k] for k in kept],
                                c.similarity_widths, c.unit_widths, c.window_units)
        for k, x in zip(kept, rows):
            out[k] = (candidates[k], torch.sigmoid(self.head(x)))  # the head per text: rows as one text alone
        return out

    def save(self, directory: Path) -> None:
        save_head_files(directory, self.head, self.config)

    @classmethod
    def load(cls, directory: Path, backbone: Backbone | None = None) -> BoundaryModel:
        config, state = read_head_files(directory, BoundaryConfig)
        if config.format not in READABLE_FORMATS:
            raise ModelLoadError(f"segmenter format {config.format} in {directory}; this build reads "
                                 f"{READABLE_FORMATS}")
        backbone = backbone or Backbone.load(config.backbone, config.backbone_kind, window=config.window,
                                             overlap=config.overlap)
        if backbone.feature_size != config.feature_size:
            raise ModelLoadError(f"the segmenter head in {directory} expects {config.feature_size} features, "
                                 f"its backbone {config.backbone!r} gives {backbone.feature_size}")
        head = BoundaryHead(config.feature_size, config.hidden, similarity=PER_WIDTH * len(config.similarity_widths),
                            unit=PER_WIDTH * (len(config.unit_widths) + len(config.window_units)),
                            fusion_hidden=config.fusion_hidden)
        try:
            head.load_state_dict(state)
        except RuntimeError as e:
            raise ModelLoadError(f"the segmenter head in {directory} does not match its config.json: {e}") from e
        return cls(backbone, head, config)


def save_head_files(directory: Path, head: nn.Module, config) -> None:
    """A segmenter directory: the head's weights (head.safetensors) and its config dataclass
    (config.json), as every head format stores them."""
    directory.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in head.state_dict().items()},
                                str(directory / "head.safetensors"))
    (directory / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")


def read_head_files(directory: Path, config_type: type[C]) -> tuple[C, dict[str, torch.Tensor]]:
    """(config, weights) of a segmenter directory; ModelLoadError when either is missing or unreadable."""
    try:
        config = config_type(**json.loads((directory / "config.json").read_text()))
        state = safetensors.torch.load_file(str(directory / "head.safetensors"))
    except (OSError, TypeError, ValueError, SafetensorError) as e:
        raise ModelLoadError(f"no usable segmenter in {directory}: {e}") from e
    return config, state
