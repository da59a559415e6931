"""GenerationBatch on a GPU: batched sequences get the tokens generate() gives each alone (the
lone path with CUDA graphs and the split-over-keys kernel; the batch eager, blocks placed into
its slots by the Triton kernel, from device memory and from pinned host memory).
Run with `pytest -m gpu tests/gpu`; skipped without a CUDA device."""

import pytest
import torch
from tiny_models import tiny_model

from blockrag.attention import BlockAttentionEngine

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

# (block lengths, final length, max_new_tokens)
SHAPES = [([5, 1, 40], 7, 9), ([30], 3, 4), ([], 5, 12), ([10, 10], 1, 6), ([50, 2], 20, 1), ([3], 2, 7)]


def _run(batch, requests, join_at):
    ids, tokens, step = {}, {}, 0
    while len(ids) < len(requests) or batch:
        for i, at in enumerate(join_at):
            if at == step:
                ids[batch.add(requests[i])] = i
        for seq_id, token in batch.step().tokens.items():
            tokens.setdefault(ids[seq_id], []).append(token)
        step += 1
    return [tokens.get(i, []) for i in range(len(requests))]


@pytest.mark.parametrize("pinned", [False, True], ids=["device-blocks", "pinned-blocks"])
@pytest.mark.parametrize("arch", ["llama31", "qwen2", "qwen3", "mistral"])
def test_cuda_batched_greedy_equals_alone(arch, pinned):
    model = tiny_model(arch).cuda()
    model.set_attn_implementation("block_sdpa")
    engine = BlockAttentionEngine(model, cuda_graphs=True, graph_context_tokens=256, host_reads="direct")
    g = torch.Generator().manual_seed(0)
    requests = []
    for lengths, m, n in SHAPES:
        blocks = [torch.randint(97, (k,), generator=g).tolist() for k in lengths]
        kvs = engine.encode_blocks(blocks) if blocks else []
        if pinned:
            kvs = [kv.to("cpu").pin_memory() for kv in kvs]
        final = torch.randint(97, (m,), generator=g).tolist()
        requests.append(engine.request(kvs, final, n, stop_ids=[]))
    alone = [list(engine.generate(r.kvs, r.final_ids, r.max_new_tokens, stop_ids=[])) for r in requests]
    assert _run(engine.batch(slots=3, slot_tokens=128), requests, [0, 0, 2, 2, 3, 5]) == alone


def test_cuda_batched_sampling_is_seeded_as_alone():
    model = tiny_model("llama31").cuda()
    model.set_attn_implementation("block_sdpa")
    engine = BlockAttentionEngine(model)
    g = torch.Generator().manual_seed(1)
    requests = []
    for i, (lengths, m, n) in enumerate(SHAPES):
        blocks = [torch.randint(97, (k,), generator=g).tolist() for k in lengths]
        final = torch.randint(97, (m,), generator=g).tolist()
        requests.append(engine.request(engine.encode_blocks(blocks) if blocks else [], final, n, 1.0,
                                       stop_ids=[], seed=i))
    alone = [list(engine.generate(r.kvs, r.final_ids, r.max_new_tokens, 1.0, stop_ids=[], seed=r.seed))
             for r in requests]
    assert _run(engine.batch(slots=4, slot_tokens=128), requests, [0, 1, 1, 2, 4, 4]) == alone


@pytest.mark.parametrize("fused", [False, True], ids=["modules-eager", "decode-fusion"])
def test_graphed_decode_steps_with_padded_buckets_equal_alone(fused, monkeypatch):
    """Five slots: buckets 1, 2, 4, 5, so three running rows replay the 4-row graph with a padded
    free row; every decode step is a replay, and each sequence still gets its lone tokens."""
    from blockrag.attention.batch_graphs import BatchDecodeGraphs, bucket_sizes

    assert bucket_sizes(5) == [1, 2, 4, 5] and bucket_sizes(1) == [1] and bucket_sizes(16) == [1, 2, 4, 8, 16]
    model = tiny_model("qwen2").cuda()
    model.set_attn_implementation("block_sdpa")
    engine = BlockAttentionEngine(model, cuda_graphs=True, graph_context_tokens=256, graph_batch_decode=True,
                                  decode_fusion=fused)
    g = torch.Generator().manual_seed(3)
    requests = []
    for lengths, m, n in SHAPES:
        blocks = [torch.randint(97, (k,), generator=g).tolist() for k in lengths]
        final = torch.randint(97, (m,), generator=g).tolist()
        requests.append(engine.request(engine.encode_blocks(blocks) if blocks else [], final, n, stop_ids=[]))
    alone = [list(engine.generate(r.kvs, r.final_ids, r.max_new_tokens, stop_ids=[])) for r in requests]
    batch = engine.batch(slots=5, slot_tokens=128)
    assert isinstance(batch.graphs, BatchDecodeGraphs) and sorted(batch.graphs.steps) == [1, 2, 4, 5]
    replays, decode = [], batch.graphs.decode
    monkeypatch.setattr(batch.graphs, "decode", lambda tokens, lengths: replays.append(len(tokens)) or decode(tokens, lengths))
    assert _run(batch, requests, [0, 0, 0, 1, 4, 6]) == alone
    assert 3 in replays and sum(replays) == sum(n - 1 for _, _, n in SHAPES)  # every token after the first
