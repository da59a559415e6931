"""The quality table: the learned segmenter beside baselines, scored in the same run on the same
instances (Pk, WindowDiff, boundary F1; definitions in metrics.py).

Baselines: no split; paragraph split; fixed-size chunks of the mean reference segment length
(measured on the evaluated instances, which favours the baseline); TextTiling (lexical
cohesion); embedding similarity (the backbone's mean-pooled sentence embeddings).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from blockrag.segment.baselines import EmbeddingSimilarity, FixedSize, TextTiling, no_split, paragraph_split
from blockrag.segment.learned import LearnedSegmenter
from blockrag.segment.metrics import Scores, evaluate


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
