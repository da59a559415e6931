"""A lone answer's decode steps replayed from a CUDA graph over the held workspace (graphs.py):
the same tokens as the eager engine, greedy and seeded; other prompts go eager while an answer
holds the workspace; an abandoned answer gives it back. Run with `pytest -m gpu tests/gpu`."""

import pytest
import torch
from tiny_models import tiny_model

from blockrag.attention import BlockAttentionEngine
from blockrag.attention.graphs import DECODE

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

# (block lengths, question length, answer tokens); the workspace holds 128 + 256 + 64 positions
SHAPES = [([5, 1, 40], 7, 40), ([100, 3], 20, 12), ([], 9, 30), ([120], 3, 64), ([60, 60], 200, 50)]


@pytest.fixture(scope="module", params=[False, True], ids=["modules-eager", "decode-fusion"])
def engines(request):
    """decode-fusion: q/k/v and gate/up as one matmul, compiled modules inside the graphs
    (fusion.py); the eager engine shares the model, so it computes with the fused projections too."""
    model = tiny_model("llama31").cuda()
    model.set_attn_implementation("block_sdpa")
    graphed = BlockAttentionEngine(model, cuda_graphs=True, graph_context_tokens=128, graph_decode_tokens=64,
                                   decode_fusion=request.param)
    assert graphed.decode_fusion == request.param
    return graphed, BlockAttentionEngine(model, cuda_graphs=False)


def _prompt(engine, lengths, m, seed):
    g = torch.Generator().manual_seed(seed)
    blocks = [torch.randint(97, (n,), generator=g).tolist() for n in lengths]
    return (engine.encode_blocks(blocks) if blocks else []), torch.randint(97, (m,), generator=g).tolist()


def _count_decodes(graphed, monkeypatch) -> list[int]:
    graphs = graphed._prefill_graphs()
    calls, decode = [0], graphs.decode

    def counted(token, position):
        calls[0] += 1
        return decode(token, position)

    monkeypatch.setattr(graphs, "decode", counted)
    return calls


@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "seeded"])
def test_graphed_decoding_equals_eager(engines, temperature, monkeypatch):
    graphed, eager = engines
    calls = _count_decodes(graphed, monkeypatch)
    for i, (lengths, m, n) in enumerate(SHAPES):
        kvs, final = _prompt(eager, lengths, m, i)
        fast = list(graphed.generate(kvs, final, n, temperature, stop_ids=[], seed=i))
        slow = list(eager.generate(kvs, final, n, temperature, stop_ids=[], seed=i))
        assert fast == slow and len(fast) == n, (lengths, m)
        assert not graphed._graphs.held
    # every token after the first came from a graph replay, none eagerly
    assert calls[0] == sum(n - 1 for _, _, n in SHAPES)
    assert DECODE in graphed._graphs.graphs


def test_a_held_workspace_sends_other_prompts_eager(engines, monkeypatch):
    graphed, eager = engines
    calls = _count_decodes(graphed, monkeypatch)
    (a_kvs, a_final), (b_kvs, b_final) = _prompt(eager, [30, 30], 8, 10), _prompt(eager, [90], 5, 11)
    first = graphed.generate(a_kvs, a_final, 20, stop_ids=[])
    head = [next(first) for _ in range(3)]
    assert graphed._graphs.held
    # a second answer and a bare prefill meanwhile: eager, and they leave the held prompt intact
    other = list(graphed.generate(b_kvs, b_final, 15, stop_ids=[]))
    logits = graphed.prefill(b_kvs, b_final).logits
    assert other == list(eager.generate(b_kvs, b_final, 15, stop_ids=[]))
    assert (logits - eager.prefill(b_kvs, b_final).logits).abs().max().item() <= 1e-4
    assert head + list(first) == list(eager.generate(a_kvs, a_final, 20, stop_ids=[]))
    assert calls[0] == 19 and not graphed._graphs.held  # only the holder replayed decode graphs


def test_an_abandoned_answer_gives_the_workspace_back(engines):
    graphed, _ = engines
    kvs, final = _prompt(graphed, [40], 6, 20)
    answer = graphed.generate(kvs, final, 30, stop_ids=[])
    next(answer)
    assert graphed._graphs.held
    answer.close()  # a client that went away: the scheduler drops the generator
    assert not graphed._graphs.held


def test_an_answer_past_the_decode_room_goes_eager(engines, monkeypatch):
    graphed, eager = engines
    calls = _count_decodes(graphed, monkeypatch)
    kvs, final = _prompt(eager, [200], 10, 30)  # 200 + 10 + 240 > the 448 positions held
    assert list(graphed.generate(kvs, final, 240, stop_ids=[])) == list(eager.generate(kvs, final, 240, stop_ids=[]))
    assert calls[0] == 0
