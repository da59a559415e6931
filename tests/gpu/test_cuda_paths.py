"""CUDA paths: the Triton placement kernel, pinned host blocks, the engine's exactness on a GPU.
Run with `pytest -m gpu` on a machine with a CUDA device; skipped elsewhere."""

import pytest
import torch
from tiny_models import tiny_model

from blockrag.attention import BlockAttentionEngine
from blockrag.attention.cache import BlockCache
from blockrag.attention.graphs import DECODE
from blockrag.attention.layout import Opening
from blockrag.attention.reference import reference_logits

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("arch", ["llama31", "qwen2"])
def test_cuda_prefill_with_an_opening_equals_reference_fp32(arch):
    # blocks encoded after the shared opening, through the gate, CUDA graphs and pinned host reads
    model = tiny_model(arch).cuda()
    model.set_attn_implementation("block_sdpa")
    opening = Opening((5, 17, 42, 8), gap=37)
    engine = BlockAttentionEngine.for_serving(model, opening=opening)
    g = torch.Generator().manual_seed(2)
    blocks = [list(opening.tokens)] + [torch.randint(97, (n,), generator=g).tolist() for n in (5, 1, 40)]
    final = torch.randint(97, (7,), generator=g).tolist()
    ref = reference_logits(model, blocks, final, opening=opening)
    assert (engine.prefill(engine.encode_blocks(blocks), final).logits - ref).abs().max().item() <= 1e-4
    pinned = [kv.to("cpu").pin_memory() for kv in engine.encode_blocks(blocks)]
    assert (engine.prefill(pinned, final).logits - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("host_reads", ["device", "direct", "staged"])
def test_triton_placement_equals_torch(dtype, host_reads):
    reads = "direct" if host_reads == "device" else host_reads  # the engine's setting for pinned sources
    engine = BlockAttentionEngine(tiny_model("llama31", dtype=dtype).cuda(), host_reads=reads)
    g = torch.Generator().manual_seed(0)
    blocks = [torch.randint(97, (n,), generator=g).tolist() for n in (1, 33, 64, 7, 100)]
    kvs = engine.encode_blocks(blocks)
    if host_reads != "device":
        kvs = [kv.to("cpu").pin_memory() for kv in kvs]
    offsets = [0, 1, 34, 98, 105]
    shape = (engine.num_layers, engine.num_kv_heads, engine.head_dim)
    fast = BlockCache(*shape, 300, dtype, "cuda")
    fast.key_buffer.fill_(float("nan"))
    fast.value_buffer.fill_(float("nan"))
    fast.write_blocks(kvs, offsets, engine.reencoder, reads)
    slow = BlockCache(*shape, 300, dtype, "cpu")
    from blockrag.attention.placement import place_blocks_torch

    place_blocks_torch([kv.to("cpu") for kv in kvs], offsets, engine.reencoder, slow.key_buffer, slow.value_buffer)
    n = 205  # every slot up to here is written once
    assert not fast.key_buffer[:, :, :, :n].isnan().any() and not fast.value_buffer[:, :, :, :n].isnan().any()
    # the kernel may fuse multiply-adds: fp32 differs in the last bits, bf16 by one rounding step
    rtol = 1e-5 if dtype == torch.float32 else 1.6e-2
    torch.testing.assert_close(fast.key_buffer[:, :, :, :n].cpu().float(), slow.key_buffer[:, :, :, :n].float(),
                               rtol=rtol, atol=1e-5)
    assert torch.equal(fast.value_buffer[:, :, :, :n].cpu(), slow.value_buffer[:, :, :, :n])


@pytest.mark.parametrize("impl", ["sdpa", "block_sdpa"])
@pytest.mark.parametrize("arch", ["llama31", "qwen2", "qwen3", "mistral"])
def test_cuda_prefill_equals_reference_fp32(arch, impl):
    model = tiny_model(arch).cuda()
    model.set_attn_implementation(impl)  # block_sdpa: split-over-keys kernel and CUDA graphs
    engine = BlockAttentionEngine.for_serving(model)
    g = torch.Generator().manual_seed(1)
    blocks = [torch.randint(97, (n,), generator=g).tolist() for n in (5, 1, 40)]
    final = torch.randint(97, (7,), generator=g).tolist()
    out = engine.prefill(engine.encode_blocks(blocks), final)
    ref = reference_logits(model, blocks, final)
    assert (out.logits - ref).abs().max().item() <= 1e-4
    pinned = [kv.to("cpu").pin_memory() for kv in engine.encode_blocks(blocks)]
    assert (engine.prefill(pinned, final).logits - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("heads,kv_heads,m,n,dim", [(32, 8, 64, 5000, 128), (9, 3, 24, 300, 64), (4, 2, 1, 77, 16),
                                                    (4, 4, 7, 1000, 32), (8, 2, 130, 130, 64)])
def test_final_block_kernel_equals_sdpa(dtype, heads, kv_heads, m, n, dim):
    from blockrag.attention.final_block_kernel import final_block_attention

    g = torch.Generator(device="cuda").manual_seed(n)
    query = torch.randn(1, m, heads, dim, device="cuda", dtype=dtype, generator=g).transpose(1, 2)  # strided like HF
    capacity = n + 37  # cache views stride over a larger capacity
    key = torch.randn(1, kv_heads, capacity, dim, device="cuda", dtype=dtype, generator=g)[:, :, :n]
    value = torch.randn(1, kv_heads, capacity, dim, device="cuda", dtype=dtype, generator=g)[:, :, :n]
    got = final_block_attention(query, key, value, None)  # [1, M, Hq, D]
    allowed = torch.ones(m, n, dtype=torch.bool, device="cuda").tril(diagonal=n - m)  # lower-right causal
    groups = heads // kv_heads
    expected = torch.nn.functional.scaled_dot_product_attention(
        query.float(), key.float().repeat_interleave(groups, 1), value.float().repeat_interleave(groups, 1),
        attn_mask=allowed).transpose(1, 2)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.float(), expected, rtol=tol, atol=tol)


def test_fused_modules_keep_the_outputs():
    from blockrag.attention.fusion import fuse_elementwise, fuse_projections, graphed

    model = tiny_model("llama31").cuda()
    ids = torch.randint(97, (1, 40), generator=torch.Generator().manual_seed(0)).cuda()
    with torch.inference_mode():
        before = model(input_ids=ids).logits
        assert fuse_projections(model) == 2 * 3
        assert fuse_elementwise(model, min_tokens=16) == 3 * 3 + 1  # 2 norms + MLP a layer, final norm
        assert fuse_elementwise(model, min_tokens=16) == 0  # idempotent
        after_large, after_small = model(input_ids=ids).logits, model(input_ids=ids[:, :8]).logits
        with graphed():  # the compiled forwards at every size, as inside a CUDA graph
            after_small_fused = model(input_ids=ids[:, :1]).logits
    torch.testing.assert_close(after_large, before, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after_small, before[:, :8], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after_small_fused, before[:, :1], rtol=1e-4, atol=1e-4)


def test_graphed_prefill_equals_eager():
    model = tiny_model("llama31").cuda()
    model.set_attn_implementation("block_sdpa")  # graphs need the split-over-keys kernel on every layer
    # capacity 128 + 256 (largest bucket) + 64 (decode) = 448 positions
    graphed = BlockAttentionEngine(model, cuda_graphs=True, graph_context_tokens=128, graph_decode_tokens=64)
    eager = BlockAttentionEngine(model, cuda_graphs=False)
    g = torch.Generator().manual_seed(2)
    for lengths, m in (([5, 1, 40], 7), ([100, 3], 20), ([], 9), ([60, 60], 16), ([480], 40)):  # the last exceeds the workspace: eager
        blocks = [torch.randint(97, (n,), generator=g).tolist() for n in lengths]
        final = torch.randint(97, (m,), generator=g).tolist()
        kvs = eager.encode_blocks(blocks) if blocks else []
        fast, slow = graphed.prefill(kvs, final), eager.prefill(kvs, final)
        assert fast.logits.shape == slow.logits.shape == (m, 97)
        assert (fast.logits - slow.logits).abs().max().item() <= 1e-4, (lengths, m)
        assert (fast.logits - reference_logits(model, blocks, final)).abs().max().item() <= 1e-4
        tokens = list(graphed.generate(kvs, final, max_new_tokens=6, stop_ids=[]))
        assert tokens == list(eager.generate(kvs, final, max_new_tokens=6, stop_ids=[]))
    # one graph per question bucket, reused across contexts, and the decode step's (generate)
    assert sorted(graphed._graphs.graphs) == [DECODE, 16, 32]
