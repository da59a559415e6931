"""The engine on the embedded default model (SmolLM2-135M-Instruct, float32)."""

from blockrag.attention.reference import reference_greedy, reference_logits
from blockrag.prompt import PromptTemplate
from blockrag.segment.paragraph import split_paragraphs
from blockrag.samples import sample_documents


def _prompt(tokenizer):
    template = PromptTemplate(tokenizer)
    docs = sample_documents()
    paragraphs = [p for text in docs.values() for p in split_paragraphs(text)][:4]
    blocks = [template.prefix_ids()] + [template.block_ids(p) for p in paragraphs]
    return blocks, template.final_ids("Which river runs through Veldmark?")


def test_gate_passes(default_engine):
    report = default_engine.gate_report
    assert report.key_error <= report.key_bound and report.logit_error <= report.logit_bound


def test_prefill_matches_reference(default_engine, default_model):
    blocks, final = _prompt(default_model[1])
    out = default_engine.prefill(default_engine.encode_blocks(blocks), final)
    ref = reference_logits(default_model[0], blocks, final)
    assert (out.logits - ref).abs().max().item() <= 1e-3 * ref.abs().max().item()


def test_generate_equals_masked_reference_greedy(default_engine, default_model):
    blocks, final = _prompt(default_model[1])
    got = list(default_engine.generate(default_engine.encode_blocks(blocks), final, max_new_tokens=20))
    expected = reference_greedy(default_model[0], blocks, final, 20, stop_ids=default_engine.stop_ids)
    assert got == expected
    assert len(got) > 0


def test_batched_generation_equals_alone(default_engine, default_model):
    # three answers over different blocks and questions: one joins two steps late, and each
    # stops at its own step (max_new_tokens or eos); greedy tokens as generate() gives them alone
    tokenizer = default_model[1]
    blocks, _ = _prompt(tokenizer)
    template = PromptTemplate(tokenizer)
    kvs = default_engine.encode_blocks(blocks)
    requests = [
        default_engine.request(kvs, template.final_ids("Which river runs through Veldmark?"), 14),
        default_engine.request(kvs[:2], template.final_ids("Summarise the first paragraph in one sentence."), 9),
        default_engine.request([kvs[0], kvs[3]], template.final_ids("Name one person mentioned."), 11),
    ]
    alone = [list(default_engine.generate(r.kvs, r.final_ids, r.max_new_tokens)) for r in requests]
    batch = default_engine.batch(slots=3, slot_tokens=1024)
    ids = {batch.add(requests[0]): 0, batch.add(requests[1]): 1}
    got, step = {0: [], 1: [], 2: []}, 0
    while batch or step < 2:
        if step == 2:
            ids[batch.add(requests[2])] = 2
        for seq_id, token in batch.step().tokens.items():
            got[ids[seq_id]].append(token)
        step += 1
    assert [got[i] for i in range(3)] == alone
    assert all(alone) and len({len(a) for a in alone}) > 1
