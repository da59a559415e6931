"""BlockWriter (Precompute's work): register, skip what is stored, encode the rest in groups,
write objects before committing their entries, and hand back what it encoded."""

from __future__ import annotations

import pytest
import torch

from blockrag.errors import InvalidRequestError, LimitExceededError
from blockrag.kvcache import KVCodec
from blockrag.resolve import BlockWriter, ResolveLimits

TEXTS = ["Ada Brenn signs every permit for long boats.", "Fishing boats unload at the eastern pier."]


def test_stored_blocks_are_kept_unless_recomputed(runtime, index, objects):
    writer = BlockWriter(index, objects, batch_tokens=16)  # one block per group
    progress: list[tuple[int, int]] = []
    first = writer.write(runtime, "t", [TEXTS[0], f" {TEXTS[0]} "], progress=lambda *p: progress.append(p))
    assert len(first) == 1 and first[0].computed and progress == [(1, 1)]  # the same text once (stripped)
    kv = KVCodec.decode(objects.get(first[0].location), runtime.version)
    assert first[0].frame == objects.get(first[0].location) and torch.equal(kv.keys, first[0].kv.keys)
    row = index.lookup("t", [first[0].block_id], runtime.version)[0]
    assert (row.hit, row.location, row.nbytes, row.token_count) == (True, first[0].location, len(first[0].frame),
                                                                     kv.num_tokens)

    both = writer.write(runtime, "t", TEXTS)
    assert [w.computed for w in both] == [False, True] and both[0].kv is None and both[0].frame is None
    assert both[0].location == first[0].location and both[0].token_count == first[0].token_count
    again = writer.write(runtime, "t", TEXTS, recompute=True)
    assert [w.computed for w in again] == [True, True] and all(w.kv is not None for w in again)


def test_bad_texts_are_refused_before_anything_is_registered(runtime, index, objects):
    writer = BlockWriter(index, objects, ResolveLimits(max_block_tokens=12))
    with pytest.raises(LimitExceededError, match="1 block\\(s\\) are over the limit of 12 tokens"):
        writer.write(runtime, "t", [TEXTS[1], "word " * 40])
    with pytest.raises(InvalidRequestError, match="non-empty"):
        writer.write(runtime, "t", ["  "])
    assert index.stats().blocks == 0
