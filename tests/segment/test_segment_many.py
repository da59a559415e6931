"""LearnedSegmenter.segment_many: the texts of one request read by the boundary model together,
every encoder pass one padded batch per chunk across the texts, with the same blocks as each text
segmented alone; and the backbone's device: a GPU only when the replica was given one and torch
can use it."""

from __future__ import annotations

import random

import pytest
import torch
from tiny_models import tiny_backbone

from blockrag.segment.backbone import ENCODER, GPU_BATCH, Backbone, choose_device
from blockrag.segment.boundary import BoundaryConfig, BoundaryHead, BoundaryModel
from blockrag.segment.learned import LearnedSegmenter, _groups
from blockrag.segment.similarity import PER_WIDTH
from blockrag.segment.spans import ParagraphSegmenter, SegmentOptions

WORDS = "orbit kitten rocket purr engine whisker launch tail fuel nap booster fur".split()


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return tiny_backbone(window=32, overlap=8)  # short windows: a long text spans several


def format5(backbone: Backbone, seed: int) -> LearnedSegmenter:
    """A random head with every feature group of the shipped format 5: wide-window similarity,
    unit and window similarity, an MLP fusion, suppression."""
    widths, unit_widths, window_units = [8, 32], [5, 20], [2]
    torch.manual_seed(seed)
    head = BoundaryHead(backbone.feature_size, 8, similarity=PER_WIDTH * len(widths),
                        unit=PER_WIDTH * (len(unit_widths) + len(window_units)), fusion_hidden=4)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.5)
    config = BoundaryConfig(backbone="tiny-bert", backbone_kind=ENCODER, feature_size=backbone.feature_size,
                            hidden=8, threshold=0.5, similarity_widths=widths, unit_widths=unit_widths,
                            window_units=window_units, fusion_hidden=4, suppress=1)
    return LearnedSegmenter(BoundaryModel(backbone, head, config), words)


def random_text(rng: random.Random, paragraphs: int) -> str:
    return "\n\n".join(" ".join(" ".join(rng.choices(WORDS, k=rng.randint(3, 12))).capitalize() + "."
                                for _ in range(rng.randint(1, 4))) for _ in range(paragraphs))


def request(seed: int) -> list[str]:
    """Texts of one request: short ones, long ones over several windows, one without a candidate."""
    rng = random.Random(seed)
    texts = [random_text(rng, rng.choice([1, 2, 3, 12])) for _ in range(7)]
    texts.insert(3, "one line without a cut")
    return texts


@pytest.mark.parametrize("seed", range(6))
def test_many_texts_give_the_blocks_each_gives_alone(backbone, seed):
    segmenter = format5(backbone, seed)
    texts = request(seed)
    rng = random.Random(seed)
    options = [SegmentOptions(max_block_tokens=rng.randint(10, 40), min_block_tokens=rng.randint(0, 5),
                              granularity=rng.random()) for _ in texts]
    alone = [segmenter.segment(t, o) for t, o in zip(texts, options)]
    assert segmenter.segment_many(texts, options) == alone
    assert sum(len(spans) for spans in alone) > 2 * len(texts)  # the head cuts: blocks are compared, not one each
    # the probabilities agree closely (the batches pad differently), the candidates exactly
    together = segmenter.model.probabilities_many(texts)
    for text, (found, probs) in zip(texts, together):
        found_alone, probs_alone = segmenter.model.probabilities(text)
        assert found == found_alone
        torch.testing.assert_close(probs, probs_alone, atol=1e-5, rtol=0)


def forward_calls(backbone: Backbone, run) -> int:
    calls = []
    hook = backbone.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        run()
    finally:
        hook.remove()
    return len(calls)


def test_the_encoder_runs_once_per_pass_for_a_request_of_short_texts(backbone):
    segmenter = format5(backbone, 0)
    rng = random.Random(1)
    texts = [random_text(rng, 2) for _ in range(6)]
    options = [SegmentOptions(max_block_tokens=40)] * len(texts)
    backbone.batch = 64  # every window and unit of the request fits one batch
    try:
        together = forward_calls(backbone, lambda: segmenter.segment_many(texts, options))
        alone = forward_calls(backbone, lambda: [segmenter.segment(t, o) for t, o in zip(texts, options)])
    finally:
        backbone.batch = 8
    # three passes (token windows, units alone, unit windows): one batch each, not one per text
    assert together == 3
    assert alone == 3 * len(texts)


def test_segment_many_checks_its_arguments_and_keeps_order(backbone):
    segmenter = format5(backbone, 0)
    with pytest.raises(ValueError, match="2 texts but 1 options"):
        segmenter.segment_many(["a. B.", "c. D."], [SegmentOptions()])
    paragraph = ParagraphSegmenter(words)
    texts = ["First one.\n\nSecond one.", "Third."]
    assert paragraph.segment_many(texts, [SegmentOptions()] * 2) == [paragraph.segment(t) for t in texts]
    assert segmenter.segment_many([], []) == []


def test_groups_bound_the_characters_read_together():
    assert _groups(["ab", "cd", "efgh", "i", "jklmnop"], 4) == [[0, 1], [2], [3], [4]]
    assert _groups([], 4) == []


def test_a_gpu_only_when_given_and_usable():
    assert choose_device([0], cuda_available=True) == torch.device("cuda", 0)
    assert choose_device([], cuda_available=True) == torch.device("cpu")  # the host's GPUs are another replica's
    assert choose_device([0], cuda_available=False) == torch.device("cpu")
    assert choose_device([0]).type == ("cuda" if torch.cuda.is_available() else "cpu")  # this machine as it is


def test_moving_to_a_device_keeps_or_raises_the_batch(backbone):
    assert backbone.batch == 8
    backbone.to("cpu")
    assert backbone.batch == 8  # the CPU keeps its batch
    backbone.to("cpu", batch=16)
    assert backbone.batch == 16
    backbone.to("cpu", batch=8)
    assert GPU_BATCH > 8
