"""GenerationBatch: sequences decoded together get, token for token, what generate() gives each alone."""

import pytest
import torch
from tiny_models import tiny_model

from blockrag.attention import BlockAttentionEngine
from blockrag.attention.kv_slots import KVSlots
from blockrag.errors import InvalidBlockError, InvalidRequestError

ARCHES = ["llama31", "qwen2", "qwen3", "mistral"]
# (block lengths, final length, max_new_tokens): different contexts, questions and answer lengths,
# so sequences leave at different steps; one with no context, one with a 1-token question
SHAPES = [([5, 1, 40], 7, 9), ([30], 3, 4), ([], 5, 12), ([10, 10], 1, 6), ([50, 2], 20, 1), ([3], 2, 7)]


def _requests(engine, seed=0, **settings):
    g = torch.Generator().manual_seed(seed)
    out = []
    for lengths, m, n in SHAPES:
        blocks = [torch.randint(97, (k,), generator=g).tolist() for k in lengths]
        final = torch.randint(97, (m,), generator=g).tolist()
        out.append(engine.request(engine.encode_blocks(blocks) if blocks else [], final, n, **settings))
    return out


def _run(batch, requests, join_at):
    """Add requests[i] before step join_at[i]; step until done. Returns (tokens per request,
    finish order, the steps at which each finished)."""
    ids, tokens, finished, ended_at = {}, {}, [], {}
    step = 0
    while len(ids) < len(requests) or batch:
        for i, at in enumerate(join_at):
            if at == step:
                ids[batch.add(requests[i])] = i
        out = batch.step()
        for seq_id, token in out.tokens.items():
            tokens.setdefault(ids[seq_id], []).append(token)
        for seq_id in out.finished:
            finished.append(ids[seq_id])
            ended_at[ids[seq_id]] = step
        step += 1
    return [tokens.get(i, []) for i in range(len(requests))], finished, ended_at


@pytest.fixture(scope="module", params=ARCHES)
def engine(request):
    model = tiny_model(request.param)
    model.set_attn_implementation("block_sdpa")
    return BlockAttentionEngine(model)


def test_batched_greedy_equals_alone(engine):
    requests = _requests(engine, stop_ids=[])
    alone = [list(engine.generate(r.kvs, r.final_ids, r.max_new_tokens, stop_ids=[])) for r in requests]
    # 3 slots for 6 requests: later ones wait for a slot; two join while others decode
    got, finished, ended_at = _run(engine.batch(slots=3, slot_tokens=128), requests, [0, 0, 2, 2, 3, 5])
    assert got == alone
    assert [len(t) for t in got] == [n for _, _, n in SHAPES]
    assert sorted(finished) == list(range(len(SHAPES)))
    assert len(set(ended_at.values())) > 2  # they really left at different steps


def test_stock_sdpa_and_one_slot():
    # the stock attention (repeat_kv under a mask) and a batch of one give the same tokens too
    model = tiny_model("qwen2")
    stock = BlockAttentionEngine(model)
    requests = _requests(stock, seed=1, stop_ids=[])
    alone = [list(stock.generate(r.kvs, r.final_ids, r.max_new_tokens, stop_ids=[])) for r in requests]
    assert _run(stock.batch(slots=1, slot_tokens=100), requests, [0] * len(requests))[0] == alone


def test_sampling_per_sequence_is_seeded_as_alone(engine):
    requests = _requests(engine, seed=2, temperature=1.0, stop_ids=[])
    requests = [engine.request(r.kvs, r.final_ids, r.max_new_tokens, 1.0, stop_ids=[], seed=i)
                for i, r in enumerate(requests)]
    alone = [list(engine.generate(r.kvs, r.final_ids, r.max_new_tokens, 1.0, stop_ids=[], seed=r.seed))
             for r in requests]
    got = _run(engine.batch(slots=4, slot_tokens=128), requests, [0, 1, 1, 2, 4, 4])[0]
    assert got == alone
    assert got[0] != list(engine.generate(requests[0].kvs, requests[0].final_ids, 9, stop_ids=[]))  # not greedy


def test_stop_ids_end_a_sequence_unemitted(engine):
    requests = _requests(engine, seed=3, stop_ids=[])
    greedy = list(engine.generate(requests[2].kvs, requests[2].final_ids, 12, stop_ids=[]))
    stop = greedy[5]
    cut = engine.request(requests[2].kvs, requests[2].final_ids, 12, stop_ids=[stop])
    got, finished, _ = _run(engine.batch(slots=2, slot_tokens=64), [requests[1], cut], [0, 0])
    assert got[1] == greedy[: greedy.index(stop)]
    assert got[0] == list(engine.generate(requests[1].kvs, requests[1].final_ids, 4, stop_ids=[]))


def test_sinks_batched_equals_alone():
    model = tiny_model("llama31")
    model.set_attn_implementation("block_sdpa")
    engine = BlockAttentionEngine(model, sink_token_id=3)
    requests = _requests(engine, seed=4, stop_ids=[])
    alone = [list(engine.generate(r.kvs, r.final_ids, r.max_new_tokens, stop_ids=[])) for r in requests]
    assert _run(engine.batch(slots=3, slot_tokens=128), requests, [0, 0, 0, 1, 1, 1])[0] == alone


def test_cancel_frees_the_slot_for_a_waiting_request(engine):
    requests = _requests(engine, seed=5, stop_ids=[])
    batch = engine.batch(slots=1, slot_tokens=128)
    first, second = batch.add(requests[2]), batch.add(requests[0])
    assert batch.step().tokens.keys() == {first}  # one slot: the second waits
    assert batch.cancel(first) and not batch.cancel(first)
    assert batch.pool.used == 0
    out = batch.step()
    assert out.tokens.keys() == {second}
    rest = [out.tokens[second]] + [t for o in batch.run() for t in o.tokens.values()]
    assert rest == list(engine.generate(requests[0].kvs, requests[0].final_ids, 9, stop_ids=[]))
    assert batch.cancel(99) is False


def test_requests_that_do_not_fit_a_slot_are_refused(engine):
    batch = engine.batch(slots=2, slot_tokens=16)
    kv = engine.encode_block(list(range(10)))
    with pytest.raises(InvalidRequestError, match="needs 17 cache positions"):
        batch.add(engine.request([kv], [1, 2, 3], max_new_tokens=4))
    batch.add(engine.request([kv], [1, 2, 3], max_new_tokens=3))  # exactly 16
    with pytest.raises(InvalidBlockError, match=r"\[0, 97\)"):
        batch.add(engine.request([kv], [97]))
    with pytest.raises(InvalidRequestError, match="max_new_tokens"):
        engine.request([kv], [1], max_new_tokens=0)
    other = BlockAttentionEngine(tiny_model("qwen3"))
    if engine.head_dim != other.head_dim:
        with pytest.raises(InvalidBlockError, match="encoded by another model"):
            batch.add(engine.request([other.encode_block([1, 2])], [4]))


def test_slots_release_moves_the_last_row():
    pool = KVSlots(3, 8, num_layers=2, num_kv_heads=1, head_dim=4, dtype=torch.float32, device="cpu")
    rows = [pool.acquire() for _ in range(3)]
    assert rows == [0, 1, 2] and pool.free == 0
    with pytest.raises(InvalidRequestError, match="in use"):
        pool.acquire()
    pool.keys[2, :, :, :5] = 7.0
    assert pool.release(0, last_row_tokens=5) == 2  # row 2's five filled positions move to row 0
    assert (pool.keys[0, :, :, :5] == 7.0).all() and (pool.keys[0, :, :, 5:] == 0).all()
    assert pool.release(1, last_row_tokens=0) is None and pool.used == 1
    with pytest.raises(InvalidRequestError, match="slot"):
        KVSlots(0, 8, 1, 1, 4, torch.float32, "cpu")


def test_a_failed_prefill_gives_its_slots_back(engine, monkeypatch):
    requests = _requests(engine, seed=6, stop_ids=[])
    batch = engine.batch(slots=3, slot_tokens=128)
    running = batch.add(requests[2])
    batch.step()
    batch.add(requests[0]), batch.add(requests[1])

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    decode = batch._forward
    calls = iter([decode, broken])  # the step's decode works, its prefill fails
    monkeypatch.setattr(batch, "_forward", lambda *a, **k: next(calls)(*a, **k))
    with pytest.raises(RuntimeError, match="out of memory") as failed:
        batch.step()
    assert "sequences dropped unstarted: [1, 2]" in failed.value.__notes__[0]
    assert batch.pool.used == 1 and [s.id for s in batch.running] == [running] and not batch.waiting
    monkeypatch.setattr(batch, "_forward", decode)
    rest = [t for out in batch.run() for t in out.tokens.values()]
    alone = list(engine.generate(requests[2].kvs, requests[2].final_ids, 12, stop_ids=[]))
    assert rest == alone[2:]


def test_pad_positions_past_a_tight_slot(engine):
    # a 1-token question prefilled beside a 20-token one: its pad positions run past its slot's
    # end and are written to the slot's last position, which its answer never reaches
    g = torch.Generator().manual_seed(7)
    long_context = engine.encode_blocks([torch.randint(97, (60,), generator=g).tolist()])
    short_context = engine.encode_blocks([torch.randint(97, (5,), generator=g).tolist()])
    tight = engine.request(long_context, [7], 3, stop_ids=[])  # needs 64 positions: all of its slot
    wide = engine.request(short_context, torch.randint(97, (20,), generator=g).tolist(), 9, stop_ids=[])
    alone = [list(engine.generate(r.kvs, r.final_ids, r.max_new_tokens, stop_ids=[])) for r in (tight, wide)]
    assert _run(engine.batch(slots=2, slot_tokens=64), [tight, wide], [0, 0])[0] == alone
