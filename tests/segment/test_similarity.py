"""Wide-window similarity features: values on hand-made token states, shapes through the backbone,
and a format-3 head that saves, loads and reads them."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_backbone

from blockrag.segment.backbone import ENCODER, Backbone, WindowPlan, _stitched
from blockrag.segment.boundary import GAP_FEATURES, BoundaryConfig, BoundaryHead, BoundaryModel
from blockrag.segment.candidates import KINDS, find_candidates, units
from blockrag.segment.similarity import (
    PER_WIDTH,
    similarity_features,
    unit_similarity_features,
    window_similarity_features,
)


def two_topics(n: int = 40) -> torch.Tensor:
    """[n, 4]: the first half of the tokens one direction, the second half an orthogonal one."""
    states = torch.zeros(n, 4)
    states[: n // 2, 0] = 1.0
    states[n // 2:, 1] = 1.0
    return states


def test_cosine_dips_to_zero_at_the_topic_change():
    out = similarity_features(two_topics(), [5, 10, 20, 30, 35], widths=[4, 12])
    assert out.shape == (5, 2 * PER_WIDTH)
    cos4, cos12 = out[:, 0], out[:, PER_WIDTH]
    assert cos4.tolist() == pytest.approx([1.0, 1.0, 0.0, 1.0, 1.0], abs=1e-6)
    # width 12 at token 30 reaches back over the change: left mean (2/12 e0 + 10/12 e1) against e1
    assert cos12[2] == pytest.approx(0.0, abs=1e-6) and 0.0 < cos12[3] < 1.0


def test_z_is_standardised_and_depth_peaks_at_the_dip():
    out = similarity_features(two_topics(), [5, 10, 20, 30, 35], widths=[4])
    cos, z, depth = out[:, 0], out[:, 1], out[:, 2]
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-5)
    assert int(z.argmin()) == int(cos.argmin()) == 2 and int(depth.argmax()) == 2
    assert float(depth[2]) == pytest.approx(2.0)  # peaks of 1 on both sides, value 0
    assert torch.all(depth[[0, 1, 3, 4]] == 0)


def test_windows_are_clipped_at_the_ends():
    out = similarity_features(two_topics(8), [1, 7], widths=[100])
    assert out.shape == (2, PER_WIDTH) and torch.isfinite(out).all()


def test_no_cuts_or_too_short():
    assert similarity_features(two_topics(), [], widths=[4]).shape == (0, PER_WIDTH)
    assert torch.equal(similarity_features(torch.ones(1, 4), [1], widths=[4, 8]), torch.zeros(1, 2 * PER_WIDTH))


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return tiny_backbone(window=32, overlap=8)


TEXT = " ".join(f"Sentence number {i} talks about topic {i % 3}." for i in range(40))


def test_stitched_states_cover_every_token_once(backbone):
    plan = WindowPlan.of(100, 32, 8)
    hidden = {i: torch.arange(s, min(s + 32, 100)).float().unsqueeze(1) for i, s in enumerate(plan.starts)}
    assert _stitched(hidden, plan).squeeze(1).tolist() == list(range(100))


def test_backbone_read_gives_both_blocks(backbone):
    offsets = [c.offset for c in find_candidates(TEXT)]
    features, similarity = backbone.read(TEXT, offsets, [8, 64])
    assert features.shape == (len(offsets), backbone.feature_size)
    assert similarity.shape == (len(offsets), 2 * PER_WIDTH)
    assert torch.allclose(features, backbone.features(TEXT, offsets))  # reading every window changes nothing
    assert backbone.read(TEXT, offsets)[1].shape == (len(offsets), 0)


def test_format_3_head_round_trip(tmp_path, backbone):
    widths = [8, 64]
    config = BoundaryConfig(backbone="tiny-bert", backbone_kind=ENCODER, feature_size=backbone.feature_size,
                            hidden=8, similarity_widths=widths, format=3)
    head = BoundaryHead(backbone.feature_size, 8, similarity=PER_WIDTH * len(widths))
    model = BoundaryModel(backbone, head, config)
    candidates = find_candidates(TEXT)
    rows = model.inputs(TEXT, candidates)
    assert rows.shape == (len(candidates), backbone.feature_size + len(KINDS) + GAP_FEATURES + PER_WIDTH * len(widths))
    model.save(tmp_path)
    loaded = BoundaryModel.load(tmp_path, backbone=backbone)
    assert loaded.config.similarity_widths == widths and loaded.config.format == 3
    assert torch.allclose(loaded.probabilities(TEXT)[1], model.probabilities(TEXT)[1])


# --- unit similarity (format 4): each unit embedded alone -------------------------------------

def unit_topics(n: int = 10, change: int = 5) -> torch.Tensor:
    """[n, 2]: units 0..change-1 one direction, the rest an orthogonal one."""
    vectors = torch.zeros(n, 2)
    vectors[:change, 0] = 1.0
    vectors[change:, 1] = 1.0
    return vectors


def test_unit_cosine_is_zero_only_at_the_change():
    out = unit_similarity_features(unit_topics(), [10] * 10, widths=[10, 30])
    assert out.shape == (9, 2 * PER_WIDTH)  # one row a gap: candidate j lies between unit j and j + 1
    cos10, cos30 = out[:, 0], out[:, PER_WIDTH]
    # width 10 words: one unit a side, so only gap 4 (units 4 | 5) straddles the change
    assert cos10.tolist() == pytest.approx([1, 1, 1, 1, 0, 1, 1, 1, 1], abs=1e-6)
    # width 30: three units a side; gap 3 reads units 1-3 | 4-6: left e0, right (e0 + 2 e1) / 3
    assert cos30[4] == pytest.approx(0.0, abs=1e-6)
    assert cos30[3] == pytest.approx(1 / 5 ** 0.5, abs=1e-6)
    depth = out[:, 2]
    assert int(depth.argmax()) == 4 and float(depth[4]) == pytest.approx(2.0)


def test_unit_windows_weigh_units_by_words_and_take_one_unit_at_least():
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    # a side always holds the unit next to the gap, however wide it is; width 5 holds nothing more
    out = unit_similarity_features(vectors, [1, 100, 3], widths=[5, 1000])
    assert out[:, 0].tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    # width 1000: gap 0 reads unit 0 | units 1-2 = (100 e1 + 3 e0) / 103
    assert float(out[0, PER_WIDTH]) == pytest.approx(3 / (100 ** 2 + 9) ** 0.5, abs=1e-6)


def test_unit_features_of_empty_units_and_single_units():
    assert unit_similarity_features(torch.zeros(1, 2), [4], widths=[8]).shape == (0, PER_WIDTH)
    out = unit_similarity_features(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), [4, 0], widths=[8])
    assert torch.isfinite(out).all() and float(out[0, 0]) == 0.0  # an empty unit has no direction


def test_unit_vectors_embed_each_text_alone(backbone):
    texts = ["First unit here.", "", "A second, longer unit of several words to read."]
    vectors = backbone.unit_vectors(texts)
    assert vectors.shape == (3, backbone.hidden_size)
    assert torch.equal(vectors[1], torch.zeros(backbone.hidden_size))
    # batching by length changes nothing: each row is the text's own embedding
    assert torch.allclose(vectors[[0, 2]], torch.from_numpy(backbone.embed([texts[0], texts[2]])), atol=1e-5)


def test_format_4_head_round_trip(tmp_path, backbone):
    widths, unit_widths = [8], [10, 40]
    config = BoundaryConfig(backbone="tiny-bert", backbone_kind=ENCODER, feature_size=backbone.feature_size,
                            hidden=8, similarity_widths=widths, unit_widths=unit_widths, suppress=2, format=4)
    head = BoundaryHead(backbone.feature_size, 8, similarity=PER_WIDTH, unit=2 * PER_WIDTH)
    with torch.no_grad():
        head.fusion.weight.normal_()
        head.scale.fill_(0.5)
    model = BoundaryModel(backbone, head, config)
    candidates = find_candidates(TEXT)
    rows = model.inputs(TEXT, candidates)
    assert rows.shape == (len(candidates), backbone.feature_size + len(KINDS) + GAP_FEATURES + 3 * PER_WIDTH)
    model.save(tmp_path)
    loaded = BoundaryModel.load(tmp_path, backbone=backbone)
    assert (loaded.config.unit_widths, loaded.config.suppress, loaded.config.format) == (unit_widths, 2, 4)
    assert torch.allclose(loaded.probabilities(TEXT)[1], model.probabilities(TEXT)[1])


def test_a_fresh_fusion_leaves_the_net_alone(backbone):
    torch.manual_seed(0)
    head = BoundaryHead(backbone.feature_size, 8, similarity=PER_WIDTH, unit=2 * PER_WIDTH).eval()
    x = torch.randn(5, backbone.feature_size + len(KINDS) + GAP_FEATURES + 3 * PER_WIDTH)
    assert torch.equal(head(x), head.net(x[:, :-2 * PER_WIDTH]).squeeze(-1))
    with torch.no_grad():
        head.fusion.bias.fill_(1.5)
    assert torch.allclose(head(x), head.net(x[:, :-2 * PER_WIDTH]).squeeze(-1) + 1.5)


def topic_embed(calls: list[list[str]]):
    """An encoder of texts made of words 'a' and 'b': the normalised (count a, count b), recording
    each call's texts."""
    def embed(texts: list[str]):
        calls.append(list(texts))
        rows = torch.tensor([[t.split().count("a"), t.split().count("b")] for t in texts], dtype=torch.float64)
        return torch.nn.functional.normalize(rows, dim=1).numpy()
    return embed


def test_window_cosine_is_lowest_at_the_change_and_each_window_embedded_once():
    texts = ["a a", "a", "a a a", "b", "b b", "b"]
    calls: list[list[str]] = []
    out = window_similarity_features(topic_embed(calls), texts, [2])
    assert out.shape == (5, PER_WIDTH)
    cos, depth = out[:, 0], out[:, 2]
    # gap 2 (between 'a a a' and 'b') joins two pure windows: cosine 0; its neighbours mix a and b
    assert cos[2] == pytest.approx(0.0, abs=1e-6) and cos[0] == pytest.approx(1.0)
    assert int(cos.argmin()) == 2 and int(depth.argmax()) == 2
    embedded = [t for call in calls for t in call]
    assert len(embedded) == len(set(embedded))  # 'a a a' right of gap 1 is not embedded again
    assert "a a a b" in embedded  # the W units are joined into ONE text, not averaged


def test_window_features_of_too_few_units():
    assert window_similarity_features(topic_embed([]), ["a"], [3]).shape == (0, PER_WIDTH)


def test_format_5_head_round_trip(tmp_path, backbone):
    config = BoundaryConfig(backbone="tiny-bert", backbone_kind=ENCODER, feature_size=backbone.feature_size,
                            hidden=8, similarity_widths=[8], unit_widths=[10], window_units=[2, 3], suppress=1)
    head = BoundaryHead(backbone.feature_size, 8, similarity=PER_WIDTH, unit=3 * PER_WIDTH)
    with torch.no_grad():
        head.fusion.weight.normal_()
    model = BoundaryModel(backbone, head, config)
    candidates = find_candidates(TEXT)
    rows = model.inputs(TEXT, candidates)
    assert rows.shape == (len(candidates), backbone.feature_size + len(KINDS) + GAP_FEATURES + 4 * PER_WIDTH)
    # the window columns are the last ones, after the unit columns
    spans_texts = [TEXT[s:e].strip() for s, e in units(TEXT, candidates)]
    expected = window_similarity_features(backbone.embed, spans_texts, [2, 3])
    assert torch.allclose(rows[:, -2 * PER_WIDTH:], expected, atol=1e-5)
    model.save(tmp_path)
    loaded = BoundaryModel.load(tmp_path, backbone=backbone)
    assert (loaded.config.window_units, loaded.config.format) == ([2, 3], 5)
    assert torch.allclose(loaded.probabilities(TEXT)[1], model.probabilities(TEXT)[1])


def test_a_fresh_mlp_fusion_leaves_the_net_alone_and_reads_its_columns(backbone):
    torch.manual_seed(0)
    unit, similarity = 2 * PER_WIDTH, PER_WIDTH
    head = BoundaryHead(backbone.feature_size, 8, similarity=similarity, unit=unit, fusion_hidden=4).eval()
    x = torch.randn(5, backbone.feature_size + len(KINDS) + GAP_FEATURES + similarity + unit)
    net_logit = head.net(x[:, :-unit]).squeeze(-1)
    assert torch.equal(head(x), net_logit)  # the last layer starts at zero
    rows = head.fusion_rows(x, net_logit)
    assert rows.shape == (5, head.fusion_inputs) == (5, 1 + unit + len(KINDS) + GAP_FEATURES + similarity)
    assert torch.equal(rows[:, 1:1 + unit], x[:, -unit:])  # the unit (and window) columns
    layout = x[:, backbone.feature_size:backbone.feature_size + len(KINDS) + GAP_FEATURES]
    assert torch.equal(rows[:, 1 + unit:1 + unit + len(KINDS) + GAP_FEATURES], layout)
    assert torch.equal(rows[:, -similarity:], x[:, -unit - similarity:-unit])
    with torch.no_grad():
        head.fusion[-1].bias.fill_(1.5)
    assert torch.allclose(head(x), net_logit + 1.5)


def test_mlp_fusion_round_trip(tmp_path, backbone):
    config = BoundaryConfig(backbone="tiny-bert", backbone_kind=ENCODER, feature_size=backbone.feature_size,
                            hidden=8, similarity_widths=[8], unit_widths=[10], window_units=[3], fusion_hidden=4)
    head = BoundaryHead(backbone.feature_size, 8, similarity=PER_WIDTH, unit=2 * PER_WIDTH, fusion_hidden=4)
    with torch.no_grad():
        for p in head.fusion.parameters():
            p.normal_()
    model = BoundaryModel(backbone, head, config)
    model.save(tmp_path)
    loaded = BoundaryModel.load(tmp_path, backbone=backbone)
    assert loaded.config.fusion_hidden == 4 and loaded.head.fusion_hidden == 4
    assert torch.allclose(loaded.probabilities(TEXT)[1], model.probabilities(TEXT)[1])
    assert not torch.allclose(model.probabilities(TEXT)[1], torch.sigmoid(head.net(model.inputs(TEXT, find_candidates(TEXT))[:, :-2 * PER_WIDTH]).squeeze(-1)))
