"""SegmentBatcher: concurrent calls (the documents of one Ingest request) segmented in one
segment_many, each caller given its own blocks, or its own error."""

from __future__ import annotations

import asyncio

import pytest

from blockrag.segment.batcher import SegmentBatcher
from blockrag.segment.spans import ParagraphSegmenter, SegmentOptions

TEXTS = [f"Document {i} opens here.\n\nIts second paragraph {i}." for i in range(5)]
OPTIONS = SegmentOptions(max_block_tokens=64)


def words(text: str) -> int:
    if "poison" in text:  # a fault no real tokenizer gives: a text the segmenter fails on
        raise RuntimeError("cannot count this text")
    return len(text.split())


class Recording(ParagraphSegmenter):
    """The paragraph segmenter, recording how many texts each segment_many call got."""

    def __init__(self):
        super().__init__(words)
        self.calls: list[int] = []

    def segment_many(self, texts, options):
        self.calls.append(len(texts))
        return super().segment_many(texts, options)


async def gather(batcher: SegmentBatcher, texts: list[str]):
    return await asyncio.gather(*(batcher.segment(t, OPTIONS) for t in texts), return_exceptions=True)


def test_concurrent_calls_are_segmented_together_in_order():
    segmenter = Recording()
    got = asyncio.run(gather(SegmentBatcher(segmenter), TEXTS))
    assert got == [segmenter.segment(t, OPTIONS) for t in TEXTS]
    assert segmenter.calls == [5]
    assert [len(spans) for spans in got] == [2] * 5


def test_batches_hold_at_most_max_batch_texts():
    segmenter = Recording()
    got = asyncio.run(gather(SegmentBatcher(segmenter, max_batch=2), TEXTS))
    assert segmenter.calls == [2, 2, 1]
    assert got == [segmenter.segment(t, OPTIONS) for t in TEXTS]


def test_a_failing_text_fails_only_its_caller():
    segmenter = Recording()
    texts = TEXTS[:2] + ["A poison text."] + TEXTS[2:]
    got = asyncio.run(gather(SegmentBatcher(segmenter), texts))
    assert isinstance(got[2], RuntimeError) and str(got[2]) == "cannot count this text"
    assert [g for k, g in enumerate(got) if k != 2] == [segmenter.segment(t, OPTIONS) for t in TEXTS]
    assert segmenter.calls[0] == 6 and segmenter.calls[1:] == [1] * 6  # the batch, then each alone


def test_a_cancelled_caller_leaves_the_others_their_blocks():
    async def run():
        batcher = SegmentBatcher(Recording(), wait_s=0.05)
        first = asyncio.create_task(batcher.segment(TEXTS[0], OPTIONS))
        second = asyncio.create_task(batcher.segment(TEXTS[1], OPTIONS))
        await asyncio.sleep(0)
        first.cancel()
        return await second, first

    spans, first = asyncio.run(run())
    assert first.cancelled() and [s.text for s in spans] == ["Document 1 opens here.", "Its second paragraph 1."]


def test_the_batch_size_is_checked():
    with pytest.raises(ValueError, match="max_batch must be at least 1, got 0"):
        SegmentBatcher(Recording(), max_batch=0)
