"""The quality table: the learned segmenter beside baselines, scored in the same run on the same
instances (Pk, WindowDiff, boundary F1; definitions in metrics.py).

Baselines: no split; paragraph split; fixed-size chunks of the mean reference segment length
(measured on the evaluated instances, which favours the baseline); TextTiling (lexical
cohesion); embedding similarity (the backbone's mean-pooled sentence embeddings).

`family_tables` gives the table for each family (code, technical docs, dialogue, prose
concatenation, heading-free prose) apart, since a pooled figure hides a family where a baseline
wins; `granularity_sweep` gives blocks per 1K tokens and Pk of the learned segmenter at each
granularity.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from blockrag.segment.train.baselines import EmbeddingSimilarity, FixedSize, TextTiling, no_split, paragraph_split
from blockrag.segment.learned import LearnedSegmenter, decide, threshold_for
from blockrag.segment.train.metrics import Scores, evaluate

GRANULARITIES = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class Row:
    name: str
    scores: Scores
    seconds: float


def mean_segment_words(instances: Sequence) -> int:
    words = segments = 0
    for instance in instances:
        words += len(instance.text.split())
        segments += len(instance.boundaries) + 1
    return max(1, round(words / max(segments, 1)))


def quality_table(instances: Sequence, learned: LearnedSegmenter, granularity: float = 0.5,
                  progress: Callable[[str], None] = lambda _: None) -> list[Row]:
    pairs = [(i.text, i.boundaries) for i in instances]
    methods: list[tuple[str, Callable[[str], Sequence[int]]]] = [
        ("learned (this model)", lambda text: learned.cut_offsets(text, granularity)),
        ("no split", no_split),
        ("paragraph split", paragraph_split),
        (f"fixed size ({mean_segment_words(instances)} words)", FixedSize(mean_segment_words(instances))),
        ("TextTiling", TextTiling()),
        ("embedding similarity", EmbeddingSimilarity(learned.model.backbone.embed)),
    ]
    rows = []
    for name, method in methods:
        progress(name)
        started = time.perf_counter()
        rows.append(Row(name, evaluate(pairs, method), time.perf_counter() - started))
    return rows


def family(instance) -> str:
    """The family an instance is scored in: its category (code, docs, dialogue), prose split into
    concatenations (`prose/concat`) and natural documents without headings (`prose/heading-free`)."""
    if instance.category == "prose":
        return "prose/concat" if instance.kind == "concat" else "prose/heading-free"
    return instance.category


def family_tables(instances: Sequence, learned: LearnedSegmenter, granularity: float = 0.5,
                  progress: Callable[[str], None] = lambda _: None) -> dict[str, list[Row]]:
    """The quality table of each family present, in name order."""
    groups: dict[str, list] = {}
    for instance in instances:
        groups.setdefault(family(instance), []).append(instance)
    return {name: quality_table(group, learned, granularity, progress=lambda m, name=name: progress(f"{name}: {m}"))
            for name, group in sorted(groups.items())}


@dataclass
class SweepPoint:
    granularity: float
    blocks_per_1k_tokens: float  # cuts + 1 per text, over the texts' tokens (count_tokens)
    pk: float


def granularity_sweep(instances: Sequence, learned: LearnedSegmenter,
                      granularities: Sequence[float] = GRANULARITIES,
                      count_tokens: Callable[[str], int] | None = None) -> list[SweepPoint]:
    """Blocks per 1K tokens (count_tokens, default the segmenter's) and Pk of the cuts (before
    size rules) at each granularity; the boundary model runs once per text."""
    read = [(i, *learned.model.probabilities(i.text)) for i in instances]
    tokens = sum((count_tokens or learned.count_tokens)(i.text) for i in instances)
    points = []
    for g in granularities:
        threshold = threshold_for(learned.model.config.threshold, g)
        cuts = [decide(found, probs, threshold, learned.model.config.suppress) for _, found, probs in read]
        blocks = sum(len(c) + 1 for c in cuts)
        by_text = {i.text: c for i, c in zip(instances, cuts)}  # one text, one set of probabilities
        scores = evaluate([(i.text, i.boundaries) for i in instances], lambda text: by_text[text])
        points.append(SweepPoint(g, 1000 * blocks / max(tokens, 1), scores.pk))
    return points
