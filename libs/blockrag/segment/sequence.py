"""UnitSequenceModel (format 6): every unit embedded once, a bidirectional GRU over the units reads
the whole text, and each candidate cut is scored from the states of the units either side.

Why: the format 2-5 head scored each candidate from features read around it (token states 32
tokens either side, similarity columns pooled over fixed widths), three encoder passes over about
five times the text, and it still leaned on layout: prose, where every paragraph break looks the
same, was cut worse than by the unsupervised embedding-similarity baseline. Here the units (the
text between two consecutive candidates: a sentence, a line, a paragraph) are embedded alone by the
frozen encoder, one pass over the text, and the recurrent layers carry what came before and what
follows over any width, so the decision at a cut compares topics and sees layout alike:

    unit i input   = [v_i (MiniLM, normalised), log words_i, gap features of the cut before unit i]
    h              = BiGRU(Linear(inputs))                        [n_units, 2 * hidden]
    logit at cut j = MLP([h_j, h_{j+1}, gap features of cut j])   (cut j lies between unit j and j+1)

Gap features per cut: the candidate's kind and layout (boundary.kind_one_hot), the cosine of the
two adjacent units, and the unit similarity columns of similarity.py (word-weighted means of the
unit vectors within W words either side: cos, z, depth), all from the one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from blockrag.errors import ModelLoadError
from blockrag.segment.backbone import DEFAULT_ENCODER, ENCODER, Backbone
from blockrag.segment.boundary import kind_one_hot, read_head_files, save_head_files
from blockrag.segment.candidates import Candidate, find_candidates, units
from blockrag.segment.similarity import PER_WIDTH, unit_similarity_features

FORMAT = 6
DEFAULT_WIDTHS = (25, 50, 100, 200, 400)  # words either side for the unit similarity columns
LAYOUT = kind_one_hot([]).shape[1]  # kind one-hot + layout columns


@dataclass
class SequenceConfig:
    """What a trained sequence head was made with; stored beside its weights."""

    backbone: str = DEFAULT_ENCODER
    backbone_kind: str = ENCODER
    hidden_size: int = 384  # the backbone's
    window: int = 256  # a unit's first `window` tokens are embedded
    hidden: int = 128  # GRU width per direction
    layers: int = 2
    unit_widths: list[int] = field(default_factory=lambda: list(DEFAULT_WIDTHS))
    threshold: float = 0.5  # the cut probability at granularity 0.5, chosen on validation data
    suppress: int = 1  # a cut must be the most likely within this many candidates either side
    members: int = 1  # heads trained alike from other seeds, their logits averaged (HeadEnsemble)
    format: int = FORMAT
    training: dict = field(default_factory=dict)

    @property
    def gap_size(self) -> int:
        return LAYOUT + 1 + PER_WIDTH * len(self.unit_widths)


@dataclass
class UnitRead:
    """One text as the head reads it: the candidates, unit vectors [n_units, hidden] (n_units =
    len(candidates) + 1), unit word counts [n_units] and gap features [len(candidates), gap_size]."""

    candidates: list[Candidate]
    vectors: torch.Tensor
    words: torch.Tensor
    gaps: torch.Tensor


class SequenceHead(nn.Module):
    """(vectors [n, H], words [n], gaps [n - 1, G]) per text -> logits [n - 1] per text."""

    def __init__(self, hidden_size: int, gap_size: int, hidden: int = 128, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.gap_size = gap_size
        self.unit_in = nn.Sequential(nn.LayerNorm(hidden_size + 1 + gap_size), nn.Linear(hidden_size + 1 + gap_size, hidden),
                                     nn.GELU(), nn.Dropout(dropout))
        self.rnn = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True, bidirectional=True,
                          dropout=dropout if layers > 1 else 0.0)
        width = 4 * hidden + gap_size
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1))

    def unit_inputs(self, read: UnitRead) -> torch.Tensor:
        """[n_units, hidden_size + 1 + gap_size]: the vector, log words, the gap before (zeros first)."""
        before = torch.cat([torch.zeros(1, self.gap_size), read.gaps])
        return torch.cat([read.vectors, torch.log1p(read.words.float()).unsqueeze(1) / 5, before], dim=1)

    def forward(self, reads: Sequence[UnitRead]) -> list[torch.Tensor]:
        """Logits [len(r.candidates)] per read, the texts run as one padded batch."""
        device = next(self.parameters()).device
        rows = [self.unit_inputs(r).to(device) for r in reads]
        lengths = torch.tensor([len(r) for r in rows])
        padded = nn.utils.rnn.pad_sequence(rows, batch_first=True)  # [b, max_units, in]
        packed = nn.utils.rnn.pack_padded_sequence(self.unit_in(padded), lengths, batch_first=True,
                                                   enforce_sorted=False)
        states, _ = self.rnn(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True)  # [b, max_units, 2 * hidden]
        out = []
        for k, r in enumerate(reads):
            n = len(r.candidates)
            h = states[k, :n + 1]
            out.append(self.out(torch.cat([h[:-1], h[1:], r.gaps.to(device)], dim=1)).squeeze(-1))
        return out


def read_units(backbone: Backbone, texts: Sequence[str], widths: Sequence[int]) -> list[UnitRead]:
    """UnitRead of each text; the units of every text embedded in one run of the encoder."""
    found = [find_candidates(t) for t in texts]
    unit_texts = [[t[s:e].strip() for s, e in units(t, c)] for t, c in zip(texts, found)]
    out = []
    for text, candidates, us, mine in zip(texts, found, unit_texts, backbone.unit_vectors_many(unit_texts)):
        words = torch.tensor([len(u.split()) for u in us])
        adjacent = (mine[:-1] * mine[1:]).sum(1, keepdim=True)  # [n - 1, 1]: the rows are normalised
        gaps = torch.cat([kind_one_hot(candidates, text), adjacent,
                          unit_similarity_features(mine, words.tolist(), list(widths))], dim=1)
        out.append(UnitRead(candidates, mine, words, gaps))
    return out


class UnitSequenceModel:
    def __init__(self, backbone: Backbone, head: SequenceHead | HeadEnsemble, config: SequenceConfig):
        self.backbone, self.head, self.config = backbone, head.eval(), config

    def probabilities(self, text: str) -> tuple[list[Candidate], torch.Tensor]:
        """The candidates of the text and the probability of a cut at each ([n] float32)."""
        return self.probabilities_many([text])[0]

    @torch.inference_mode()
    def probabilities_many(self, texts: Sequence[str]) -> list[tuple[list[Candidate], torch.Tensor]]:
        """`probabilities` of each text: one encoder run over the units of all of them, then the
        head over each text (texts without a candidate give none)."""
        reads = read_units(self.backbone, texts, self.config.unit_widths)
        out: list[tuple[list[Candidate], torch.Tensor]] = [([], torch.zeros(0)) for _ in texts]
        kept = [k for k, r in enumerate(reads) if r.candidates]
        for k, logits in zip(kept, self.head([reads[k] for k in kept]) if kept else []):
            out[k] = (reads[k].candidates, torch.sigmoid(logits.float().cpu()))
        return out

    def save(self, directory: Path) -> None:
        save_head_files(directory, self.head, self.config)

    @classmethod
    def load(cls, directory: Path, backbone: Backbone | None = None) -> UnitSequenceModel:
        config, state = read_head_files(directory, SequenceConfig)
        if config.format != FORMAT:
            raise ModelLoadError(f"segmenter format {config.format} in {directory} is not a sequence head ({FORMAT})")
        backbone = backbone or Backbone.load(config.backbone, config.backbone_kind, window=config.window)
        if backbone.hidden_size != config.hidden_size:
            raise ModelLoadError(f"the segmenter head in {directory} reads {config.hidden_size}-wide unit vectors, "
                                 f"its backbone {config.backbone!r} gives {backbone.hidden_size}")
        head = new_head(config)
        try:
            head.load_state_dict(state)
        except RuntimeError as e:
            raise ModelLoadError(f"the segmenter head in {directory} does not match its config.json: {e}") from e
        return cls(backbone, head, config)


class HeadEnsemble(nn.ModuleList):
    """Heads of one config trained from different seeds; logits averaged per cut. The GRU heads
    cost little beside the encoder pass, and a mean of a few of them ranks cuts more steadily
    than any one of them (TRAINING.md)."""

    def forward(self, reads: Sequence[UnitRead]) -> list[torch.Tensor]:
        runs = [member(reads) for member in self]
        return [torch.stack(per_text).mean(0) for per_text in zip(*runs)]


def new_head(config: SequenceConfig) -> SequenceHead | HeadEnsemble:
    if config.members > 1:
        return HeadEnsemble([SequenceHead(config.hidden_size, config.gap_size, config.hidden, config.layers)
                             for _ in range(config.members)])
    return SequenceHead(config.hidden_size, config.gap_size, config.hidden, config.layers)


def ensemble(heads: Sequence[SequenceHead]) -> HeadEnsemble:
    """The heads (trained alike) as one ensemble head, each in eval mode."""
    return HeadEnsemble([h.eval() for h in heads]).eval()


