"""Bad input to the engine gets typed errors with actionable messages."""

import pytest
import torch
from tiny_models import tiny_model

from blockrag.attention import BlockAttentionEngine, BlockKV
from blockrag.errors import InvalidBlockError, InvalidRequestError


@pytest.fixture(scope="module")
def engine():
    return BlockAttentionEngine(tiny_model("qwen2"))


def test_empty_block_and_out_of_range_ids(engine):
    with pytest.raises(InvalidBlockError, match="at least one token"):
        engine.encode_block([])
    with pytest.raises(InvalidBlockError, match=r"\[0, 97\)"):
        engine.encode_blocks([[1, 2], [97]])
    with pytest.raises(InvalidBlockError, match="at least one token"):
        engine.prefill([engine.encode_block([1, 2])], [])


def test_block_from_another_model_is_refused(engine):
    other = BlockAttentionEngine(tiny_model("qwen3"))  # head_dim 32 instead of 16
    with pytest.raises(InvalidBlockError, match="encoded by another model"):
        engine.prefill([other.encode_block([1, 2, 3])], [4])


def test_generation_settings(engine):
    kv = engine.encode_block([1, 2, 3])
    with pytest.raises(InvalidRequestError, match="max_new_tokens"):
        engine.generate([kv], [4], max_new_tokens=0)
    with pytest.raises(InvalidRequestError, match="temperature"):
        engine.generate([kv], [4], temperature=-1.0)


def test_sampling_is_seeded_and_stops_at_stop_ids(engine):
    kv = engine.encode_block([1, 2, 3])
    a = list(engine.generate([kv], [4, 5], max_new_tokens=12, temperature=1.0, seed=3, stop_ids=[]))
    b = list(engine.generate([kv], [4, 5], max_new_tokens=12, temperature=1.0, seed=3, stop_ids=[]))
    assert a == b and len(a) == 12
    greedy = list(engine.generate([kv], [4, 5], max_new_tokens=12, stop_ids=[]))
    cut = list(engine.generate([kv], [4, 5], max_new_tokens=12, stop_ids=[greedy[4]]))
    assert cut == greedy[: greedy.index(greedy[4])]


def test_blockkv_shape_checks():
    with pytest.raises(InvalidBlockError, match="share a shape"):
        BlockKV((1, 2), torch.zeros(2, 2, 2, 4), torch.zeros(2, 2, 3, 4))
    with pytest.raises(InvalidBlockError, match="one KV row per token"):
        BlockKV((1,), torch.zeros(2, 2, 2, 4), torch.zeros(2, 2, 2, 4))


def test_cuda_graphs_need_a_cuda_device():
    from blockrag.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="cuda_graphs=True needs a CUDA device"):
        BlockAttentionEngine(tiny_model("qwen2"), cuda_graphs=True)
