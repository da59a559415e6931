"""Training the boundary head on a tiny synthetic set (two topics, cut where the topic changes) with
the real MiniLM backbone; scores and threshold choice; save/load; the quality table."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from blockrag.errors import ModelLoadError
from blockrag.segment.backbone import Backbone
from blockrag.segment.boundary import GAP_FEATURES, FORMAT, BoundaryConfig, BoundaryModel, kind_one_hot
from blockrag.segment.candidates import KINDS, Candidate, find_candidates
from blockrag.segment.train.data import Instance
from blockrag.segment.train.evaluation import quality_table
from blockrag.segment.learned import LearnedSegmenter
from blockrag.segment.train.training import (THRESHOLD_GRID, FeatureSet, choose_threshold, featurize, probabilities, scores_at,
                                       train_head)

CATS = ["Cats purr softly on the warm windowsill.", "A kitten chases the tail of the old cat.",
        "Feline whiskers twitch while the cat grooms its fur.", "The kitten naps in a basket of wool.",
        "Cats lick their paws after every meal.", "A tabby cat stretches and yawns in the sun."]
ROCKETS = ["Rockets burn liquid fuel to reach orbit.", "The boosters separate high above the launch pad.",
           "Engines roar as the rocket leaves the ground.", "Fuel tanks feed the engines during the launch.",
           "The second stage fires once the boosters fall away.", "Mission control tracks the rocket into orbit."]


def instance(rng: random.Random, segments: int = 4, lines: int = 3) -> Instance:
    """Segments of `lines` one-sentence lines, the topic alternating; every join is a plain line
    break, so a true cut is a "line" candidate like the others and only the content tells it."""
    topics = [CATS, ROCKETS] if rng.random() < 0.5 else [ROCKETS, CATS]
    text, boundaries = "", []
    for s in range(segments):
        if s:
            text += "\n"
            boundaries.append(len(text))
        text += "\n".join(rng.sample(topics[s % 2], lines))
    built = Instance(text=text, boundaries=boundaries, category="prose", kind="concat", source="concat:a | b")
    built.validate()
    return built


@pytest.fixture(scope="module")
def minilm() -> Backbone:
    return Backbone.load()


@pytest.fixture(scope="module")
def instances() -> list[Instance]:
    rng = random.Random(0)
    return [instance(rng) for _ in range(8)]


@pytest.fixture(scope="module")
def data(minilm, instances) -> FeatureSet:
    return featurize(minilm, instances)


@pytest.fixture(scope="module")
def head(data):
    return train_head(data, hidden=64, epochs=60, lr=3e-3)


def test_featurize_labels_every_candidate(data, instances):
    size = 6 * 384 + 1  # the backbone's features, then the kind one-hot, then the layout features
    assert data.inputs.shape == (len(data.labels), size + len(KINDS) + GAP_FEATURES)
    assert [len(c) for c in data.candidates] == [11] * len(instances)  # 12 lines, 11 line candidates
    line = torch.zeros(len(KINDS))
    line[KINDS.index("line")] = 1.0
    assert torch.equal(data.inputs[:, size:size + len(KINDS)], line.expand(len(data.labels), -1))
    # every join is one line break before a capitalised line at column 0 after a full stop
    layout = data.inputs[:, size + len(KINDS):]
    assert torch.equal(layout[:, 2:], torch.tensor([1 / 3, 1, 1, 0, 1, 0]).expand(len(data.labels), -1))
    for i, inst in enumerate(instances):
        rows = data.rows(i)
        torch.testing.assert_close(data.inputs[rows, size:], kind_one_hot(data.candidates[i], inst.text))
        lines = inst.text.split("\n")
        lengths = [[math.log1p(len(a)) / 10, math.log1p(len(b) + 1) / 10] for a, b in zip(lines, lines[1:-1])]
        lengths.append([math.log1p(len(lines[-2])) / 10, math.log1p(len(lines[-1])) / 10])  # the last unit: no "\n"
        torch.testing.assert_close(layout[rows, :2], torch.tensor(lengths))
        assert rows.tolist() == list(range(11 * i, 11 * (i + 1)))  # grouped by instance, in order
        cut = [c.offset for c, y in zip(data.candidates[i], data.labels[rows].tolist()) if y == 1.0]
        assert cut == inst.boundaries


def test_trained_head_ranks_true_cuts_first(head, data):
    probs = probabilities(head, data)
    assert probs.shape == data.labels.shape and ((probs >= 0) & (probs <= 1)).all()
    positive, negative = probs[data.labels == 1], probs[data.labels == 0]
    assert (positive > negative.median()).all()
    auc = (positive[:, None] > negative[None, :]).float().mean()  # P(a cut outranks a non-cut)
    assert auc > 0.95


def test_training_is_deterministic_for_a_seed(data):
    a, b = train_head(data, hidden=8, epochs=2), train_head(data, hidden=8, epochs=2)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)


def test_choose_threshold_on_the_training_data(head, data):
    threshold, scores = choose_threshold(probabilities(head, data), data)
    assert threshold in THRESHOLD_GRID
    values = (scores.pk, scores.window_diff, scores.precision, scores.recall, scores.f1)
    assert all(0.0 <= v <= 1.0 for v in values)
    assert scores.f1 > 0.5


# --- scores_at and choose_threshold on hand-made probabilities --------------------------------

def hand_made(labels: list[list[int]]) -> FeatureSet:
    candidates = [[Candidate(10 * (j + 1), "line") for j in range(len(y))] for y in labels]
    flat = [v for y in labels for v in y]
    return FeatureSet(inputs=torch.zeros(len(flat), 3), labels=torch.tensor(flat, dtype=torch.float32),
                      owner=torch.tensor([i for i, y in enumerate(labels) for _ in y]), candidates=candidates)


def test_scores_at_perfect_and_empty_cuts():
    data = hand_made([[0, 0, 1, 0, 0, 1, 0], [0, 1, 0, 0]])
    perfect = torch.where(data.labels == 1, 0.8, 0.2)
    s = scores_at(perfect, data, 0.5)
    assert (s.pk, s.window_diff, s.precision, s.recall, s.f1) == (0.0, 0.0, 1.0, 1.0, 1.0)
    none = scores_at(perfect, data, 0.9)
    assert (none.precision, none.recall, none.f1) == (0.0, 0.0, 0.0) and none.pk > 0


def test_choose_threshold_takes_the_highest_of_the_best():
    data = hand_made([[0, 0, 1, 0, 0, 1, 0], [0, 1, 0, 0]])
    threshold, scores = choose_threshold(torch.where(data.labels == 1, 0.77, 0.23), data)
    # every grid value in [0.23, 0.77) is perfect: the highest of them is sigmoid(1) = 0.7311
    assert threshold == max(t for t in THRESHOLD_GRID if 0.23 <= t < 0.77) == 0.7311 and scores.f1 == 1.0


# --- save / load ------------------------------------------------------------------------------

def model_of(minilm: Backbone, head, threshold: float = 0.5) -> BoundaryModel:
    config = BoundaryConfig(backbone="all-minilm-l6-v2", backbone_kind="encoder", feature_size=minilm.feature_size,
                            hidden=64, threshold=threshold, window=minilm.window, overlap=minilm.overlap)
    return BoundaryModel(minilm, head, config)


def test_save_and_load_round_trip(tmp_path, minilm, head, instances):
    model = model_of(minilm, head, threshold=0.35)
    model.save(tmp_path / "seg")
    loaded = BoundaryModel.load(tmp_path / "seg", backbone=minilm)
    assert loaded.config == model.config
    for inst in instances[:2]:
        (found, probs), (found2, probs2) = model.probabilities(inst.text), loaded.probabilities(inst.text)
        assert found == found2
        assert torch.equal(probs, probs2)


def test_load_refuses_a_head_for_another_backbone(tmp_path, minilm, head):
    model_of(minilm, head).save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "feature_size": 2304}))
    with pytest.raises(ModelLoadError, match="expects 2304 features"):
        BoundaryModel.load(tmp_path, backbone=minilm)


def test_load_refuses_another_format(tmp_path, minilm, head):
    model_of(minilm, head).save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "format": FORMAT + 1}))
    with pytest.raises(ModelLoadError, match="format"):
        BoundaryModel.load(tmp_path, backbone=minilm)


def test_load_of_an_empty_directory(tmp_path, minilm):
    with pytest.raises(ModelLoadError, match="no usable segmenter"):
        BoundaryModel.load(tmp_path, backbone=minilm)


def test_kind_one_hot():
    rows = kind_one_hot([Candidate(1, "paragraph"), Candidate(5, "sentence")])  # no text: no layout
    assert rows.tolist() == [[1, 0, 0, 0, 0, 0] + [0] * 8, [0, 0, 0, 0, 0, 1] + [0] * 8]
    assert GAP_FEATURES == 8 and kind_one_hot([]).shape == (0, len(KINDS) + GAP_FEATURES)
    assert kind_one_hot([], "some text").shape == (0, len(KINDS) + GAP_FEATURES)


def test_layout_features():
    text = "Hi. Hello there.\n\n# Title\n  indented line,\nNext one (\n@decorated\n\n\n\nend"
    candidates = find_candidates(text)
    assert candidates == [Candidate(4, "sentence"), Candidate(18, "paragraph"), Candidate(28, "line"),
                          Candidate(43, "line"), Candidate(54, "line"), Candidate(68, "paragraph")]
    L = lambda n: math.log1p(n) / 10  # noqa: E731
    # the previous unit's length (stripped), the next unit's (to the next candidate), newlines in
    # the gap (at most 3) / 3, next at column 0, previous ends with .!? / with :,;({[\\, next
    # starts uppercase / with one of #<`=-*@[/
    layout = [
        [L(3), L(14), 0, 0, 1, 0, 1, 0],       # "Hi." | "Hello there.\n\n": mid-line
        [L(12), L(10), 2 / 3, 1, 1, 0, 0, 1],  # "Hello there." | "# Title\n  "
        [L(7), L(15), 1 / 3, 0, 0, 0, 0, 0],   # "# Title" | "indented line,\n": indented
        [L(14), L(11), 1 / 3, 1, 0, 1, 1, 0],  # "indented line," | "Next one (\n"
        [L(10), L(14), 1 / 3, 1, 0, 1, 0, 1],  # "Next one (" | "@decorated\n\n\n\n"
        [L(10), L(3), 1, 1, 0, 0, 0, 0],       # "@decorated" | "end": four newlines count as three
    ]
    expected = torch.tensor([[float(k == c.kind) for k in KINDS] + row for c, row in zip(candidates, layout)])
    torch.testing.assert_close(kind_one_hot(candidates, text), expected)


# --- the quality table ------------------------------------------------------------------------

def test_quality_table_has_every_method(minilm, head, data, instances):
    threshold, _ = choose_threshold(probabilities(head, data), data)
    learned = LearnedSegmenter(model_of(minilm, head, threshold), lambda text: len(text.split()))
    seen = []
    rows = quality_table(instances[:3], learned, progress=seen.append)
    names = [r.name for r in rows]
    assert seen == names
    assert names[0].startswith("learned") and names[1:3] == ["no split", "paragraph split"]
    assert names[3].startswith("fixed size") and names[4:] == ["TextTiling", "embedding similarity"]
    for r in rows:
        s = r.scores
        assert all(0.0 <= v <= 1.0 for v in (s.pk, s.window_diff, s.precision, s.recall, s.f1))
        assert r.seconds >= 0
    by_name = {r.name: r.scores for r in rows}
    assert by_name["no split"].f1 == 0.0
    assert rows[0].scores.f1 > by_name["no split"].f1  # on its own training data, at least


# --- fitting the fusion of a format-4 head ------------------------------------------------------

def test_fit_fusion_learns_the_unit_signal_and_keeps_the_net():
    from blockrag.segment.boundary import BoundaryHead
    from blockrag.segment.train.training import FeatureSet, fit_fusion

    torch.manual_seed(0)
    feature_size, unit, n = 4, 3, 400
    net_only = BoundaryHead(feature_size, 8).eval()
    width = feature_size + kind_one_hot([]).shape[1]
    main = torch.randn(n, width)
    shift = torch.randn(n, unit)
    labels = (shift[:, 0] < -1.0).float()  # cuts where the first unit feature is low: the net cannot see it
    data = FeatureSet(torch.cat([main, shift], dim=1), labels, torch.zeros(n, dtype=torch.long), [[]])
    before = {k: v.clone() for k, v in net_only.net.state_dict().items()}
    fused = fit_fusion(net_only, data, unit)
    for k, v in fused.net.state_dict().items():
        assert torch.equal(v, before[k])

    def auc(logits: torch.Tensor) -> float:  # the chance that a cut outranks a non-cut
        return float((logits[labels == 1].unsqueeze(1) > logits[labels == 0].unsqueeze(0)).float().mean())

    with torch.no_grad():
        assert auc(fused(data.inputs)) > 0.98 and auc(net_only(main)) < 0.7
    assert float(fused.fusion.weight[0, 0]) < 0  # low first feature: higher cut logit


def test_segment_fuse_adds_a_fusion_to_a_format_3_head(tmp_path, minilm, head, instances):
    from typer.testing import CliRunner

    from blockrag.cli.segment import app
    from blockrag.segment.train.data import write_jsonl
    from blockrag.segment.similarity import DEFAULT_UNIT_WIDTHS, DEFAULT_WINDOW_UNITS
    from blockrag.segment.train.training import SUPPRESS_GRID

    model_of(minilm, head, threshold=0.35).save(tmp_path / "net")
    write_jsonl(tmp_path / "data.jsonl", instances)
    result = CliRunner().invoke(app, ["fuse", "--model", str(tmp_path / "net"), "--data", str(tmp_path / "data.jsonl"),
                                      "--out", str(tmp_path / "fused")])
    assert result.exit_code == 0, result.output
    fused = BoundaryModel.load(tmp_path / "fused", backbone=minilm)
    config = fused.config
    assert (config.format, config.unit_widths, config.window_units) == (
        5, list(DEFAULT_UNIT_WIDTHS), list(DEFAULT_WINDOW_UNITS)) and config.suppress in SUPPRESS_GRID
    assert fused.head.unit == 3 * (len(DEFAULT_UNIT_WIDTHS) + len(DEFAULT_WINDOW_UNITS))
    assert config.fusion_hidden == fused.head.fusion_hidden == 16  # the shipped recipe's MLP fusion
    assert config.training["fusion"]["instances"] == len(instances) and config.training["net"] == {}
    for key, value in head.net.state_dict().items():
        assert torch.equal(fused.head.net.state_dict()[key], value)  # the net is kept as it was
    # a fused head's fusion is refitted (linear, without window features: format 4), its net the same
    again = CliRunner().invoke(app, ["fuse", "--model", str(tmp_path / "fused"), "--data", str(tmp_path / "data.jsonl"),
                                     "--out", str(tmp_path / "twice"), "--no-window", "--fusion-hidden", "0",
                                     "--steps", "300", "--lr", "0.05"])
    assert again.exit_code == 0, again.output
    twice = BoundaryModel.load(tmp_path / "twice", backbone=minilm)
    assert (twice.config.format, twice.config.window_units, twice.head.unit) == (4, [], 3 * len(DEFAULT_UNIT_WIDTHS))
    assert twice.config.fusion_hidden == twice.head.fusion_hidden == 0
    assert twice.config.training["net"] == {}
    for key, value in head.net.state_dict().items():
        assert torch.equal(twice.head.net.state_dict()[key], value)
