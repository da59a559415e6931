"""Training the boundary head: features from the frozen backbone (computed once), a small MLP
trained with a class-weighted binary cross-entropy, and the threshold chosen on validation
instances to minimise Pk + WindowDiff.

Labels: a candidate is a cut when its offset is one of the instance's true boundaries (the data
builder puts every boundary at a line start, which is always a candidate).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from blockrag.segment.backbone import Backbone
from blockrag.segment.boundary import BoundaryHead, head_inputs, kind_one_hot
from blockrag.segment.candidates import KINDS, Candidate, find_candidates
from blockrag.segment.train.metrics import boundary_f1, pk, window_diff

Progress = Callable[[int, int], None]
THRESHOLD_GRID = [round(1 / (1 + math.exp(-x / 2)), 4) for x in range(-8, 15)]  # logits -4 to 7, in halves


@dataclass
class FeatureSet:
    """Head inputs of every candidate of every instance, with labels.

    inputs [N, features + kinds] float32, labels [N] float32 (1 = cut), owner [N] int64 (instance
    index); candidates[i] are instance i's candidates, in order (rows are grouped by instance).
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    owner: torch.Tensor
    candidates: list[list[Candidate]]

    def rows(self, instance: int) -> torch.Tensor:
        return (self.owner == instance).nonzero().squeeze(1)


def featurize(backbone: Backbone, instances: Sequence, progress: Progress | None = None,
              widths: Sequence[int] = (), unit_widths: Sequence[int] = (),
              window_units: Sequence[int] = ()) -> FeatureSet:
    """The head's input rows (as BoundaryModel.inputs makes them) and labels of every candidate;
    widths, unit_widths, window_units: the similarity widths of the head (similarity.py), none
    for format 2."""
    inputs, labels, owner, candidates = [], [], [], []
    for i, instance in enumerate(instances):
        found = find_candidates(instance.text)
        truth = set(instance.boundaries)
        inputs.append(head_inputs(backbone, instance.text, found, widths, unit_widths, window_units))
        labels.append(torch.tensor([float(c.offset in truth) for c in found]))
        owner.append(torch.full((len(found),), i, dtype=torch.int64))
        candidates.append(found)
        if progress:
            progress(i + 1, len(instances))
    return FeatureSet(torch.cat(inputs), torch.cat(labels), torch.cat(owner), candidates)


def train_head(data: FeatureSet, *, hidden: int = 256, epochs: int = 30, lr: float = 1e-3, batch: int = 512,
               seed: int = 0, progress: Progress | None = None, similarity: int = 0, unit: int = 0,
               device: torch.device | str = "cpu") -> BoundaryHead:
    """similarity, unit: how many of the last input columns are wide-window similarity features,
    then unit similarity features (similarity.py). Trained on `device`, returned on the CPU."""
    torch.manual_seed(seed)
    head = BoundaryHead(data.inputs.shape[1] - kind_one_hot([]).shape[1] - similarity - unit, hidden,
                        similarity=similarity, unit=unit).to(device)
    inputs, labels = data.inputs.to(device), data.labels.to(device)
    positives = float(data.labels.sum())
    # cuts are rare among candidates (every line and sentence end is one): weigh them up by the
    # imbalance (its square root ranked held-out cuts worse: Pk 0.306 against 0.282). This lifts
    # the probabilities, so the chosen threshold is high: the grid reaches 0.999.
    imbalance = (len(data.labels) - positives) / max(positives, 1.0)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(imbalance, device=device))
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-2)
    order = list(range(len(data.labels)))
    rng = random.Random(seed)
    head.train()
    for epoch in range(epochs):
        rng.shuffle(order)
        for start in range(0, len(order), batch):
            idx = torch.tensor(order[start:start + batch], device=device)
            optimizer.zero_grad()
            loss = loss_fn(head(inputs[idx]), labels[idx])
            loss.backward()
            optimizer.step()
        if progress:
            progress(epoch + 1, epochs)
    return head.cpu().eval()


def fit_fusion(head: BoundaryHead, data: FeatureSet, unit: int, *, steps: int = 300, lr: float = 0.05,
               weight_decay: float = 1e-3, seed: int = 0, hidden: int = 0) -> BoundaryHead:
    """A fused head (format 4, or 5 with window features): `head`'s net, frozen, with the fusion
    term (and the scale of the net's logit) fitted full-batch with a class-weighted logistic loss
    on `data`, whose last `unit` columns are the unit (and window) similarity features. hidden=0:
    a linear fusion (Adam, lr, weight_decay); else an MLP fusion of that width (AdamW). `data`
    should be instances the net was not trained on, so that its logits are as confident as on
    new text."""
    torch.manual_seed(seed)
    fused = BoundaryHead(head.feature_size, head.net[1].out_features, similarity=data.inputs.shape[1] - unit
                         - head.feature_size - kind_one_hot([]).shape[1], unit=unit, fusion_hidden=hidden)
    fused.net.load_state_dict(head.net.state_dict())
    fused.eval()  # no dropout: the net is fixed
    for p in fused.net.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        base = fused.net(data.inputs[:, :-unit]).squeeze(-1)  # [N]
    if hidden:
        rows = fused.fusion_rows(data.inputs, base)  # [N, fusion_inputs]
        logits = lambda: fused.scale * base + fused.fusion(rows).squeeze(-1)  # noqa: E731
        optimizer = torch.optim.AdamW([fused.scale, *fused.fusion.parameters()], lr=lr, weight_decay=weight_decay)
    else:
        kinds = data.inputs[:, head.feature_size:head.feature_size + len(KINDS)]
        extra = torch.cat([data.inputs[:, -unit:], kinds], dim=1)  # [N, unit + kinds]
        logits = lambda: fused.scale * base + fused.fusion(extra).squeeze(-1)  # noqa: E731
        optimizer = torch.optim.Adam([fused.scale, *fused.fusion.parameters()], lr=lr, weight_decay=weight_decay)
    positives = float(data.labels.sum())
    imbalance = (len(data.labels) - positives) / max(positives, 1.0)  # as train_head weighs cuts
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(imbalance))
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(logits(), data.labels)
        loss.backward()
        optimizer.step()
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused.eval()


@torch.inference_mode()
def probabilities(head: BoundaryHead, data: FeatureSet) -> torch.Tensor:
    return torch.sigmoid(head.eval()(data.inputs))


@dataclass
class Scores:
    pk: float
    window_diff: float
    precision: float
    recall: float
    f1: float


def suppressed(probs: torch.Tensor, data: FeatureSet, radius: int) -> torch.Tensor:
    """probs with every candidate that is not a local maximum within `radius` candidates of its
    own instance set to 0 (learned.decide's rule), so that scoring at a threshold scores that rule."""
    from blockrag.segment.learned import local_maxima

    if radius <= 0:
        return probs
    out = probs.clone()
    for i in range(len(data.candidates)):
        idx = data.rows(i)
        out[idx] = torch.where(local_maxima(probs[idx], radius), probs[idx], torch.zeros(()))
    return out


def scores_at(probs: torch.Tensor, data: FeatureSet, threshold: float) -> Scores:
    """Macro-averaged scores over instances, cutting where probs > threshold. Units are the spans
    between candidates: cutting at candidate j is the boundary before unit j + 1."""
    rows = []
    for i, found in enumerate(data.candidates):
        idx = data.rows(i)
        reference = [j + 1 for j, y in enumerate(data.labels[idx].tolist()) if y > 0.5]
        hypothesis = [j + 1 for j, p in enumerate(probs[idx].tolist()) if p > threshold]
        n = len(found) + 1
        rows.append((pk(reference, hypothesis, n), window_diff(reference, hypothesis, n),
                     *boundary_f1(reference, hypothesis)))
    return Scores(*(statistics.fmean(col) for col in zip(*rows)))


def choose_threshold(probs: torch.Tensor, data: FeatureSet) -> tuple[float, Scores]:
    """The threshold (on a grid) with the lowest Pk + WindowDiff on `data`."""
    scored = [(t, scores_at(probs, data, t)) for t in THRESHOLD_GRID]
    return min(scored, key=lambda ts: (ts[1].pk + ts[1].window_diff, -ts[0]))


SUPPRESS_GRID = (0, 1, 2, 3, 4)


def choose_decision(probs: torch.Tensor, data: FeatureSet,
                    radii: Sequence[int] = SUPPRESS_GRID) -> tuple[float, int, Scores]:
    """(threshold, suppression radius, scores): the pair with the lowest Pk + WindowDiff on `data`
    (the smaller radius on a tie)."""
    best = []
    for radius in radii:
        threshold, scores = choose_threshold(suppressed(probs, data, radius), data)
        best.append((threshold, radius, scores))
    return min(best, key=lambda b: (b[2].pk + b[2].window_diff, b[1]))
