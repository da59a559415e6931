"""Training the sequence head (format 6, segment/sequence.py): units embedded once by the frozen
backbone (cached with `featurize_units`), the GRU head trained on whole texts with a
class-weighted binary cross-entropy, and the threshold and suppression radius chosen on validation
texts to minimise Pk + WindowDiff (training.choose_decision, on candidate units).

Labels: a candidate is a cut when its offset is one of the instance's true boundaries.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from blockrag.segment.backbone import Backbone
from blockrag.segment.sequence import HeadEnsemble, SequenceConfig, SequenceHead, UnitRead, ensemble, new_head, read_units
from blockrag.segment.train.training import FeatureSet, Scores, choose_decision

Progress = Callable[[int, int], None]


@dataclass
class UnitData:
    """The reads of some instances and their labels ([len(read.candidates)] float32, 1 = cut)."""

    reads: list[UnitRead]
    labels: list[torch.Tensor]

    def __add__(self, other: UnitData) -> UnitData:
        return UnitData(self.reads + other.reads, self.labels + other.labels)

    def subset(self, indices: Sequence[int]) -> UnitData:
        return UnitData([self.reads[i] for i in indices], [self.labels[i] for i in indices])


def featurize_units(backbone: Backbone, instances: Sequence, widths: Sequence[int], chunk: int = 16,
                    progress: Progress | None = None) -> UnitData:
    """Reads (read_units) and labels of the instances, `chunk` texts per encoder run."""
    reads: list[UnitRead] = []
    labels: list[torch.Tensor] = []
    for start in range(0, len(instances), chunk):
        part = instances[start:start + chunk]
        for instance, read in zip(part, read_units(backbone, [i.text for i in part], widths)):
            truth = set(instance.boundaries)
            reads.append(read)
            labels.append(torch.tensor([float(c.offset in truth) for c in read.candidates]))
        if progress:
            progress(min(start + chunk, len(instances)), len(instances))
    return UnitData(reads, labels)


def featurize_file(backbone: Backbone, path: Path, instances: Sequence, widths: Sequence[int],
                   cache: Path | None = None, progress: Progress | None = None) -> UnitData:
    """`featurize_units` of the instances read from `path`, kept in `cache` (a directory) under
    the file's name, size and modification time, and read back from there while the file is
    unchanged."""
    stat = path.stat()
    key = cache / f"{path.name}.{stat.st_size}.{int(stat.st_mtime)}.pt" if cache else None
    if key is not None and key.is_file():
        return torch.load(key, weights_only=False)
    data = featurize_units(backbone, instances, widths, progress=progress)
    if key is not None:
        key.parent.mkdir(parents=True, exist_ok=True)
        torch.save(data, key)
    return data


def train_sequence_head(data: UnitData, config: SequenceConfig, *, epochs: int = 20, lr: float = 2e-3,
                        batch: int = 16, seed: int = 0, max_units: int = 1024, pos_power: float = 0.5,
                        progress: Progress | None = None) -> SequenceHead:
    """The head trained on `data` (texts without candidates skipped). A text longer than
    max_units units is trained on in random windows of that many units (whole texts are read at
    inference; the GRU carries no position limit)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    head = new_head(config)
    kept = [i for i, r in enumerate(data.reads) if r.candidates]
    positives = sum(float(data.labels[i].sum()) for i in kept)
    total = sum(len(data.labels[i]) for i in kept)
    # cuts are rare among candidates (every sentence and line end is one): weigh them up by a
    # power of the imbalance (0.5 by default: the probabilities stay spread enough for the grid)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(((total - positives) / max(positives, 1.0)) ** pos_power))
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-2)
    steps = epochs * ((len(kept) + batch - 1) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 1))
    head.train()
    for epoch in range(epochs):
        rng.shuffle(kept)
        for start in range(0, len(kept), batch):
            reads, labels = zip(*(_window(data.reads[i], data.labels[i], max_units, rng) for i in kept[start:start + batch]))
            optimizer.zero_grad()
            loss = loss_fn(torch.cat(head(list(reads))), torch.cat(labels))
            loss.backward()
            nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            optimizer.step()
            schedule.step()
        if progress:
            progress(epoch + 1, epochs)
    return head.eval()


def _window(read: UnitRead, labels: torch.Tensor, max_units: int, rng: random.Random) -> tuple[UnitRead, torch.Tensor]:
    n = len(read.candidates) + 1
    if n <= max_units:
        return read, labels
    a = rng.randrange(0, n - max_units + 1)
    b = a + max_units  # units a..b-1, cuts a..b-2
    return UnitRead(read.candidates[a:b - 1], read.vectors[a:b], read.words[a:b], read.gaps[a:b - 1]), labels[a:b - 1]


@torch.inference_mode()
def predict(head: SequenceHead, data: UnitData, batch: int = 32) -> list[torch.Tensor]:
    """Cut probabilities [len(read.candidates)] of each read."""
    head.eval()
    out: list[torch.Tensor] = [torch.zeros(0) for _ in data.reads]
    kept = [i for i, r in enumerate(data.reads) if r.candidates]
    for start in range(0, len(kept), batch):
        part = kept[start:start + batch]
        for i, logits in zip(part, head([data.reads[i] for i in part])):
            out[i] = torch.sigmoid(logits)
    return out


def as_feature_set(data: UnitData, probs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, FeatureSet]:
    """(probs [N], FeatureSet without inputs) in training.py's form, for choose_decision and scores_at."""
    owner = torch.cat([torch.full((len(p),), i, dtype=torch.int64) for i, p in enumerate(probs)])
    return torch.cat(list(probs)), FeatureSet(torch.zeros(len(owner), 0), torch.cat(data.labels), owner,
                                              [r.candidates for r in data.reads])


@dataclass
class Trained:
    """What `train_model` made: the head (an ensemble for several members), the decision chosen
    on the validation part and its scores there, and the parts it split the data into."""

    head: SequenceHead | HeadEnsemble
    threshold: float
    radius: int
    scores: Scores
    fit: UnitData
    validation: UnitData


def train_model(data: UnitData, config: SequenceConfig, *, validation: float = 0.125, members: int = 1,
                seed: int = 0, epochs: int = 12, lr: float = 2e-3, pos_power: float = 0.5,
                progress: Callable[[int], Progress] | None = None) -> Trained:
    """A shuffled `validation` fraction of the texts (seeded) held out; `members` heads trained on
    the rest from seeds seed, seed + 1, ... (averaged when several); the threshold and suppression
    radius with the lowest Pk + WindowDiff on the held-out texts. progress(k) gives head k's
    per-epoch callback."""
    order = list(range(len(data.reads)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * validation))
    val, fit = data.subset(sorted(order[:n_val])), data.subset(sorted(order[n_val:]))
    heads = [train_sequence_head(fit, dataclasses.replace(config, members=1), epochs=epochs, lr=lr, seed=seed + k,
                                 pos_power=pos_power, progress=progress(k) if progress else None)
             for k in range(members)]
    head = ensemble(heads) if members > 1 else heads[0]
    threshold, radius, scores = choose_decision(*as_feature_set(val, predict(head, val)))
    return Trained(head, threshold, radius, scores, fit, val)
