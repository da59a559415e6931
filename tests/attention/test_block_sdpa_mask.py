"""block_sdpa's masks reach SDPA additive, made once per forward (not converted from bool in
every layer), and give the same attention as the bool form."""

import pytest
import torch
from tiny_models import tiny_model
from torch.utils._python_dispatch import TorchDispatchMode

from blockrag.attention import BlockAttentionEngine
from blockrag.attention.sdpa import block_sdpa_forward


_MATMULS = (torch.ops.aten.linear.default, torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default)


class _SdpaMasks(TorchDispatchMode):
    """Records the attn_mask and is_causal of every scaled_dot_product_attention call, and the
    row counts of the matmuls whose output is as wide as the vocabulary (lm_head)."""

    def __init__(self, vocab_size: int = 0):
        super().__init__()
        self.vocab_size = vocab_size
        self.masks: list[torch.Tensor | None] = []
        self.causal: list[bool] = []
        self.head_rows: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is torch.ops.aten.scaled_dot_product_attention.default:
            self.masks.append(kwargs.get("attn_mask", args[3] if len(args) > 3 else None))
            self.causal.append(bool(kwargs.get("is_causal", args[5] if len(args) > 5 else False)))
        elif func in _MATMULS and out.shape[-1] == self.vocab_size:
            self.head_rows.append(out.numel() // self.vocab_size)
        return out


@pytest.fixture(scope="module")
def engine():
    model = tiny_model("llama31")  # grouped-query heads: block_sdpa's own CPU path
    model.set_attn_implementation("block_sdpa")
    return BlockAttentionEngine(model)


def _blocks(engine):
    g = torch.Generator().manual_seed(0)
    return engine.encode_blocks([torch.randint(97, (n,), generator=g).tolist() for n in (9, 14)]), [5, 6, 7, 8]


def test_final_block_mask_is_additive_and_shared_by_every_layer(engine):
    kvs, final = _blocks(engine)
    with _SdpaMasks() as seen:
        engine.prefill(kvs, final, logits_to_keep=1)
    assert len(seen.masks) == engine.num_layers
    assert all(m is not None and m.dtype == engine.dtype for m in seen.masks)
    # one [1, 1, 4, 27] mask made before the layers, the same storage in each of them
    assert {(tuple(m.shape), m.untyped_storage().data_ptr()) for m in seen.masks} == {
        ((1, 1, 4, 27), seen.masks[0].untyped_storage().data_ptr())}
    allowed = seen.masks[0][0, 0] == 0
    assert allowed.tolist() == [[k <= 23 + q for k in range(27)] for q in range(4)]  # lower-right causal


def test_batch_decode_mask_is_additive(engine):
    kvs, final = _blocks(engine)
    batch = engine.batch(slots=2, slot_tokens=64)
    batch.add(engine.request(kvs, final, 3, stop_ids=[]))
    batch.add(engine.request(kvs[:1], final[:2], 3, stop_ids=[]))
    batch.step()  # prefill of both
    with _SdpaMasks() as seen:
        batch.step()  # decode: rows at lengths 27 and 11
    assert len(seen.masks) == engine.num_layers
    assert all(m.dtype == engine.dtype and tuple(m.shape) == (2, 1, 1, 28) for m in seen.masks)
    assert ((seen.masks[0][:, 0, 0] == 0).sum(-1)).tolist() == [28, 12]


def test_additive_mask_gives_the_bool_mask_attention():
    g = torch.Generator().manual_seed(2)
    query, key, value = (torch.randn(s, generator=g) for s in ((2, 6, 5, 8), (2, 2, 40, 8), (2, 2, 40, 8)))
    allowed = torch.arange(40)[None, None, :] <= torch.tensor([30, 12])[:, None, None] + torch.arange(5)[None, :, None]
    allowed = allowed[:, None]  # [2, 1, 5, 40], each row to its own length
    additive = torch.zeros(allowed.shape).masked_fill_(~allowed, torch.finfo(torch.float32).min)
    module = torch.nn.Module()
    from_bool, _ = block_sdpa_forward(module, query, key, value, allowed, scaling=0.3)
    from_additive, _ = block_sdpa_forward(module, query, key, value, additive, scaling=0.3)
    assert torch.equal(from_bool, from_additive)


def test_full_prefill_baseline_runs_unmasked_causal_attention_and_one_logit_row(engine):
    # the baseline the cached path is measured against (bench/serving_cpu.py) does no needless
    # work either: no [N, N] mask (SDPA's causal kernel), lm_head on the last position only
    g = torch.Generator().manual_seed(3)
    prompt = torch.randint(97, (40,), generator=g).tolist()
    with _SdpaMasks(engine.vocab_size) as seen:
        out = engine.full_prefill(prompt, logits_to_keep=1)
    assert seen.masks == [None] * engine.num_layers and all(seen.causal)
    assert seen.head_rows == [1] and out.logits.shape == (1, engine.vocab_size)
