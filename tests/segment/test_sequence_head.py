"""The unit sequence head (format 6): batched reads equal lone ones, it saves and loads exactly,
the loader picks the format, and training learns a cut that only the content shows."""

from __future__ import annotations

import json
import random

import pytest
import torch
from tiny_models import tiny_backbone

from blockrag.errors import ModelLoadError
from blockrag.segment.candidates import find_candidates
from blockrag.segment.default import load_model, load_segmenter
from blockrag.segment.learned import LearnedSegmenter
from blockrag.segment.sequence import (LAYOUT, HeadEnsemble, SequenceConfig, UnitSequenceModel, ensemble, new_head,
                                       read_units)
from blockrag.segment.train.data import Instance
from blockrag.segment.train.sequence_training import (as_feature_set, featurize_units, predict,
                                                      train_sequence_head)
from blockrag.segment.train.training import choose_decision, scores_at

WIDTHS = [5, 20]


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone(window=32, overlap=8)


def config(backbone) -> SequenceConfig:
    return SequenceConfig(backbone="tiny-bert", hidden_size=backbone.hidden_size, hidden=8, layers=1,
                          unit_widths=WIDTHS, threshold=0.5, suppress=0)


TEXTS = [
    "Alpha beta gamma. Delta epsilon.\n\nZeta eta theta iota.\nKappa lambda.",
    "One line only without a cut",
    "# Title\n\nSome words here. More words there.\n\ndef f():\n    return 1\n",
]


def test_read_shapes(backbone):
    reads = read_units(backbone, TEXTS, WIDTHS)
    for text, read in zip(TEXTS, reads):
        n = len(find_candidates(text))
        assert len(read.candidates) == n
        assert read.vectors.shape == (n + 1, backbone.hidden_size) and read.words.shape == (n + 1,)
        assert read.gaps.shape == (n, config(backbone).gap_size)
    # column LAYOUT is the cosine of the two adjacent unit vectors
    first = reads[0]
    assert first.gaps[0, LAYOUT] == pytest.approx(float(first.vectors[0] @ first.vectors[1]), abs=1e-5)


def test_batched_probabilities_equal_lone_ones(backbone):
    torch.manual_seed(1)
    model = UnitSequenceModel(backbone, new_head(config(backbone)), config(backbone))
    together = model.probabilities_many(TEXTS)
    for text, (candidates, probs) in zip(TEXTS, together):
        alone_candidates, alone = model.probabilities(text)
        assert candidates == alone_candidates
        assert torch.allclose(probs, alone, atol=1e-6)
    assert together[1][1].numel() == 0  # a text without a candidate


def test_saves_loads_and_the_loader_picks_the_format(backbone, tmp_path, monkeypatch):
    torch.manual_seed(2)
    model = UnitSequenceModel(backbone, new_head(config(backbone)), config(backbone))
    model.save(tmp_path)
    loaded = UnitSequenceModel.load(tmp_path, backbone)
    for (_, a), (_, b) in zip(model.probabilities_many(TEXTS), loaded.probabilities_many(TEXTS)):
        assert torch.equal(a, b)
    # load_model dispatches on config.json's format (a format-6 directory is never read as format 5)
    monkeypatch.setattr(UnitSequenceModel, "load", classmethod(lambda cls, d, b=None: ("sequence", d)))
    assert load_model(tmp_path) == ("sequence", tmp_path)


def test_refuses_a_mismatched_directory(backbone, tmp_path):
    model = UnitSequenceModel(backbone, new_head(config(backbone)), config(backbone))
    model.save(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "hidden": 16}))
    with pytest.raises(ModelLoadError, match="does not match its config.json"):
        UnitSequenceModel.load(tmp_path, backbone)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "hidden_size": 384}))
    with pytest.raises(ModelLoadError, match="384-wide"):
        UnitSequenceModel.load(tmp_path, backbone)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "format": 5}))
    with pytest.raises(ModelLoadError, match="not a sequence head"):
        UnitSequenceModel.load(tmp_path, backbone)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="no usable segmenter"):
        load_segmenter(tmp_path, len)


WORDS = {"a": ["apple", "pear", "plum", "cherry", "grape"], "b": ["engine", "piston", "valve", "gear", "shaft"]}


def topic_text(rng: random.Random) -> Instance:
    """Sentences of one topic, then of the other, with nothing but the words to tell the switch:
    the cut is where the topic changes."""
    first, second = rng.sample(["a", "b"], 2)
    k = rng.randint(3, 6)
    sentences = [" ".join(rng.choice(WORDS[first if i < k else second]) for _ in range(6)).capitalize() + "."
                 for i in range(10)]
    text = " ".join(sentences)
    cut = len(" ".join(sentences[:k])) + 1
    return Instance(text, [cut], "prose", "concat", "synthetic")


def test_training_learns_a_content_cut(backbone):
    """Every candidate is a sentence end and looks alike; only the topic shift tells the cut. A
    trained head finds it on new texts, an untrained one does not."""
    rng = random.Random(0)
    train = featurize_units(backbone, [topic_text(rng) for _ in range(48)], WIDTHS)
    test = featurize_units(backbone, [topic_text(rng) for _ in range(16)], WIDTHS)
    assert all(len(r.candidates) == 9 for r in train.reads)
    cfg = config(backbone)
    torch.manual_seed(0)
    untrained = as_feature_set(test, predict(new_head(cfg), test))
    head = train_sequence_head(train, cfg, epochs=40, lr=1e-2, batch=8)
    probs, data = as_feature_set(test, predict(head, test))
    threshold, radius, scores = choose_decision(probs, data)
    assert scores.pk <= 0.05 and scores.f1 >= 0.9
    assert scores_at(*untrained, threshold).pk > 0.2


def test_long_texts_train_in_windows(backbone):
    rng = random.Random(3)
    data = featurize_units(backbone, [topic_text(rng) for _ in range(4)], WIDTHS)
    head = train_sequence_head(data, config(backbone), epochs=1, batch=2, max_units=4)
    assert isinstance(head(data.reads[:1])[0], torch.Tensor)


def test_learned_segmenter_runs_a_sequence_model(backbone):
    model = UnitSequenceModel(backbone, new_head(config(backbone)), config(backbone))
    segmenter = LearnedSegmenter(model, lambda t: len(t.split()))
    text = TEXTS[0] + "\n\n" + TEXTS[2]
    coarse, fine = set(segmenter.cut_offsets(text, 0.0)), set(segmenter.cut_offsets(text, 1.0))
    assert coarse <= fine <= {c.offset for c in find_candidates(text)}


def test_an_ensemble_averages_its_members_and_round_trips(backbone, tmp_path):
    cfg = config(backbone)
    torch.manual_seed(4)
    members = [new_head(cfg), new_head(cfg)]
    joint = ensemble(members)
    reads = read_units(backbone, [TEXTS[0], TEXTS[2]], WIDTHS)
    with torch.no_grad():
        expected = [(a + b) / 2 for a, b in zip(members[0](reads), members[1](reads))]
        for got, want in zip(joint(reads), expected):
            assert torch.allclose(got, want, atol=1e-6)
    cfg.members = 2
    UnitSequenceModel(backbone, joint, cfg).save(tmp_path)
    loaded = UnitSequenceModel.load(tmp_path, backbone)
    assert isinstance(loaded.head, HeadEnsemble) and len(loaded.head) == 2
    for (_, p), want in zip(loaded.probabilities_many([TEXTS[0], TEXTS[2]]), expected):
        assert torch.allclose(p, torch.sigmoid(want), atol=1e-6)
