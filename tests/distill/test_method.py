"""Block distillation's parts on tiny random models: layout, loss, weights, dropout, the
student's forward against the engine, training and resuming."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from tiny_models import tiny_model

from blockrag.attention import BlockAttentionEngine
from blockrag.attention.layout import Opening
from blockrag.attention.reference import reference_logits
from blockrag.distill.config import DistillConfig, LoraSettings
from blockrag.distill.example import Example, build_layout, pick_global_blocks
from blockrag.distill.loss import backward_ce, backward_kl, sensitivity_weights, token_kl
from blockrag.distill.student import attach_lora, decoder_hidden, output_head, teacher_mode
from blockrag.errors import InvalidRequestError

SINK = 5
EXAMPLE = Example.of([[10, 11, 12], [20, 21], [30, 31, 32, 33]], [40, 41], [50, 51, 52])


def test_layout_sequences_mask_and_indices():
    layout = build_layout(EXAMPLE, SINK, global_blocks={1})
    assert layout.teacher_ids.tolist() == [10, 11, 12, 20, 21, 30, 31, 32, 33, 40, 41, 50, 51, 52]
    assert layout.student_ids.tolist() == [5, 10, 11, 12, 5, 20, 21, 5, 30, 31, 32, 33, 40, 41, 50, 51, 52]
    m = layout.student_mask
    assert m[3, 0] and m[3, 1] and not m[1, 3]  # block 0 with its sink, causal
    assert m[5, 0] and m[6, 4]  # global block 1 (positions 4..6) sees everything before it
    assert not m[8, 5] and m[8, 7]  # block 2 sees its own sink only
    assert m[12, 0] and m[16, 8] and not m[12, 13]  # the final segment sees all before, nothing after
    # supervised: block 1's in-block prediction (20 -> 21), then 41 -> 50, 50 -> 51, 51 -> 52
    assert layout.student_ids[layout.student_index].tolist() == [20, 41, 50, 51]
    assert layout.teacher_ids[layout.teacher_index].tolist() == [20, 41, 50, 51]
    assert layout.labels.tolist() == [21, 50, 51, 52]
    assert layout.answer.tolist() == [False, True, True, True]


def test_layout_without_sinks_or_dropout_is_the_engine_layout():
    layout = build_layout(EXAMPLE, None)
    assert torch.equal(layout.student_ids, layout.teacher_ids)
    assert layout.student_index.tolist() == [10, 11, 12]


OPENING_EXAMPLE = Example.of([[7, 8, 9], [20, 21], [30, 31, 32]], [40, 41], [50, 51, 52])


@pytest.mark.parametrize("context", ["sinks", "opening", "opening+lead"])
def test_student_forward_equals_the_engines_cached_path(context):
    """The training forward under the block mask (sinks on, or blocks after a shared opening,
    with or without the first passage in its lead form; adapter with non-zero weights) gives the
    logits that an engine serving the merged weights computes from cached blocks."""
    model = tiny_model("llama31")
    model.set_attn_implementation("block_sdpa")
    student = attach_lora(model, LoraSettings(rank=4, target_modules=("q_proj", "v_proj", "down_proj")))
    with torch.no_grad():
        for name, p in student.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)  # B starts at zero: make the adapter matter
    sink, opening = (SINK, None) if context == "sinks" else (None, Opening((7, 8, 9), gap=4))
    example = EXAMPLE if context == "sinks" else OPENING_EXAMPLE
    lead = context == "opening+lead"
    layout = build_layout(example, sink, opening=opening, lead=lead)
    with torch.no_grad():
        hidden = decoder_hidden(student, layout.student_ids, layout.student_positions, layout.student_mask)
        train_logits = output_head(student)(hidden[-5:])  # the final segment: 40 41 50 51 52
        with teacher_mode(student):
            base_hidden = decoder_hidden(student, layout.student_ids, layout.student_positions, layout.student_mask)
    merged = student.merge_and_unload().eval()
    engine = BlockAttentionEngine(merged, sink_token_id=sink, opening=opening)
    kvs = engine.encode_blocks(example.blocks)
    if lead:  # as the platform serves the first passage (exact_first_passage)
        kvs[1] = engine.encode_lead(example.blocks[1])
        gapped = engine.prefill(engine.encode_blocks(example.blocks), example.final + example.target).logits
    cached = engine.prefill(kvs, example.final + example.target).logits
    assert (train_logits - cached).abs().max().item() <= 1e-4
    if lead:  # the lead form mattered
        assert (gapped - cached).abs().max().item() > 1e-3
    # and the adapter did matter: the base under the same mask differs
    assert (output_head(merged)(base_hidden[-5:]) - cached).abs().max().item() > 1e-2
    # and so did the sinks or the opening: plain blocks give other logits
    plain = BlockAttentionEngine(merged)
    alone = plain.prefill(plain.encode_blocks(example.blocks), example.final + example.target).logits
    assert (alone - cached).abs().max().item() > 1e-3


def _naive_kl(head, teacher_h, student_h):
    log_t = torch.log_softmax(head(teacher_h), -1)
    log_s = torch.log_softmax(head(student_h), -1)
    return (log_t.exp() * (log_t - log_s)).sum(-1)


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_chunked_kl_and_its_gradient_equal_the_whole_computation(chunk):
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    teacher = torch.randn(7, 8)
    x = torch.randn(7, 8, requires_grad=True)
    weights = torch.rand(7) + 0.5
    parts = backward_kl(head, x * 2, teacher, weights, chunk, scale=0.25)
    got = x.grad.clone()
    x.grad = None
    head.zero_grad()
    expected = _naive_kl(head, teacher, x * 2)
    ((expected * weights).sum() * 0.25).backward()
    assert parts.tokens == 7
    assert parts.kl == pytest.approx(float(expected.detach().sum()), rel=1e-5)
    assert parts.loss == pytest.approx(float((expected * weights).detach().sum()), rel=1e-5)
    assert torch.allclose(got, x.grad, atol=1e-6)
    assert torch.allclose(token_kl(head, teacher, x.detach() * 2, chunk), expected.detach(), atol=1e-6)


def test_hard_labels_add_their_weighted_cross_entropy_to_the_kl():
    torch.manual_seed(2)
    head = torch.nn.Linear(8, 50, bias=False)
    teacher, x = torch.randn(5, 8), torch.randn(5, 8, requires_grad=True)
    weights, labels = torch.rand(5) + 0.5, torch.tensor([4, 9, 0, 49, 4])
    label_weights = torch.tensor([0.0, 0.3, 0.3, 0.0, 0.3])  # target tokens only
    parts = backward_kl(head, x, teacher, weights, 2, scale=0.5, labels=labels, label_weights=label_weights)
    got = x.grad.clone()
    x.grad = None
    kl = _naive_kl(head, teacher, x)
    ce = torch.nn.functional.cross_entropy(head(x), labels, reduction="none")
    expected = (kl * weights).sum() + (ce * label_weights).sum()
    (expected * 0.5).backward()
    assert parts.loss == pytest.approx(float(expected.detach()), rel=1e-5)
    assert parts.kl == pytest.approx(float(kl.detach().sum()), rel=1e-5)  # the KL alone, as reported
    assert torch.allclose(got, x.grad, atol=1e-6)
    with pytest.raises(InvalidRequestError, match="hard_label_weight"):
        DistillConfig(hard_label_weight=-1)
    with pytest.raises(InvalidRequestError, match="hard_label_weight"):
        DistillConfig.block_fine_tuning(hard_label_weight=0.5)


def test_kl_of_identical_distributions_is_zero_and_ce_matches_cross_entropy():
    torch.manual_seed(1)
    head = torch.nn.Linear(8, 50, bias=False)
    h = torch.randn(4, 8)
    assert token_kl(head, h, h, 2).abs().max().item() == 0.0
    x = torch.randn(4, 8, requires_grad=True)
    labels = torch.tensor([3, 0, 49, 7])
    total = backward_ce(head, x, labels, 3, scale=1.0)
    expected = torch.nn.functional.cross_entropy(head(x), labels, reduction="sum")
    assert total == pytest.approx(float(expected), rel=1e-5)


def test_sensitivity_weights():
    assert sensitivity_weights(torch.tensor([1.0, 3.0]), 0.5).tolist() == [0.75, 1.25]
    assert sensitivity_weights(torch.tensor([1.0, 3.0]), 1.0).tolist() == [0.5, 1.5]
    assert sensitivity_weights(torch.tensor([1.0, 3.0]), 0.0).tolist() == [1.0, 1.0]
    assert not sensitivity_weights(torch.tensor([1.0], requires_grad=True), 1.0).requires_grad


def test_block_dropout_draws():
    g = torch.Generator().manual_seed(0)
    assert pick_global_blocks(6, 0.0, g) == set()
    assert pick_global_blocks(6, 1.0, g) == set(range(6))
    draws = [len(pick_global_blocks(10, 0.3, torch.Generator().manual_seed(s))) for s in range(200)]
    assert 2.5 < sum(draws) / len(draws) < 3.5
    a = pick_global_blocks(10, 0.5, torch.Generator().manual_seed(7))
    assert a == pick_global_blocks(10, 0.5, torch.Generator().manual_seed(7))


def test_initial_kl_is_the_base_models_block_attention_gap():
    """Before any step, the recipe's KL is KL(full || block) of the base model, as computed by the
    masked reference: the layout, the teacher and the sink placement agree with independent code."""
    from blockrag.distill.recipe import DistillationRecipe

    model = tiny_model("qwen2")
    model.set_attn_implementation("block_sdpa")
    recipe = DistillationRecipe(DistillConfig(sink_token="<sink>", opening=False, lora=LoraSettings(rank=2)), model, SINK)
    recipe.setup()
    got = recipe.evaluate([EXAMPLE])
    with recipe.student.disable_adapter():
        base = recipe.student.get_base_model()
        # the predictions of the three target tokens: from 41, 50 and 51
        block = reference_logits(base, EXAMPLE.blocks, EXAMPLE.final + EXAMPLE.target, sink_token_id=SINK)[-4:-1]
        ids = [t for b in EXAMPLE.blocks for t in b] + list(EXAMPLE.final + EXAMPLE.target)
        with torch.no_grad():
            full = base(input_ids=torch.tensor([ids])).logits[0, -4:-1].float()
    log_f, log_b = torch.log_softmax(full, -1), torch.log_softmax(block, -1)
    expected = float((log_f.exp() * (log_f - log_b)).sum(-1).mean())
    assert got == pytest.approx(expected, rel=1e-4)
    assert got > 1e-4


def _recipe(config: DistillConfig):
    from blockrag.distill.recipe import DistillationRecipe

    model = tiny_model("llama31")
    model.set_attn_implementation("block_sdpa")
    recipe = DistillationRecipe(config, model, SINK if config.sink_token else None)
    recipe.setup()
    return recipe


def _examples():
    g = torch.Generator().manual_seed(3)
    out = []
    for _ in range(4):
        blocks = [torch.randint(10, 97, (int(n),), generator=g).tolist() for n in torch.randint(3, 9, (3,), generator=g)]
        out.append(Example.of(blocks, torch.randint(10, 97, (3,), generator=g).tolist(),
                              torch.randint(10, 97, (6,), generator=g).tolist()))
    return out


def test_distillation_reduces_the_kl_it_is_trained_on():
    config = DistillConfig(sink_token="<sink>", opening=False, steps=40, warmup_steps=2, learning_rate=3e-3,
                           lora=LoraSettings(rank=8), block_dropout=0.25, token_weighting=0.5)
    recipe = _recipe(config)
    examples = _examples()[:2]
    before = recipe.evaluate(examples)  # the fresh adapter is zero: the base model's gap
    for _ in range(40):
        metrics = recipe.train_step(examples)
    after = recipe.evaluate(examples)
    assert metrics.step == 40 and metrics.kl is not None and metrics.tokens > 0
    assert before > 0
    assert after < 0.5 * before


@pytest.mark.parametrize("objective", ["kl", "kl+labels", "ce"])
def test_a_padded_micro_batch_gives_the_gradient_of_one_example_at_a_time(objective):
    """Examples of different lengths right-padded into one forward: no real token may see
    padding, so the step's loss and the adapter after it match one example per forward."""
    if objective.startswith("kl"):
        config = DistillConfig(sink_token="<sink>", opening=False, steps=3, warmup_steps=1, learning_rate=3e-3,
                               lora=LoraSettings(rank=4), block_dropout=0.5, token_weighting=0.5,
                               hard_label_weight=0.5 if objective == "kl+labels" else 0.0)
    else:
        config = DistillConfig.block_fine_tuning(steps=3, warmup_steps=1, learning_rate=3e-3, lora=LoraSettings(rank=4))
    one, four = _recipe(replace(config, micro_batch=1)), _recipe(replace(config, micro_batch=4))
    with torch.no_grad():  # non-zero B, so the student differs from the teacher from the start
        for recipe in (one, four):
            torch.manual_seed(1)
            for name, p in recipe.student.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
    examples = _examples()
    assert len({e.num_tokens for e in examples}) > 1  # padding happens
    before = {k: v.clone() for k, v in one.adapter().weights.items()}
    a, b = one.train_step(examples), four.train_step(examples)
    assert a.loss == pytest.approx(b.loss, rel=1e-4) and a.supervised == b.supervised
    # the step's gradients (kept on the parameters until the next step); not the weights after
    # Adam, whose first update g / |g| turns rounding in a near-zero gradient into a full step
    ga = {n: p.grad for n, p in one.student.named_parameters() if p.requires_grad}
    gb = {n: p.grad for n, p in four.student.named_parameters() if p.requires_grad}
    largest = max(g.abs().max().item() for g in ga.values())
    assert largest > 0 and max((ga[n] - gb[n]).abs().max().item() for n in ga) <= 1e-5 * largest
    wa = one.adapter().weights
    assert max((wa[k] - before[k]).abs().max().item() for k in wa) > 1e-4  # the step did move them


def test_block_fine_tuning_runs_without_teacher():
    recipe = _recipe(DistillConfig.block_fine_tuning(steps=3, lora=LoraSettings(rank=2)))
    metrics = recipe.train_step(_examples()[:2])
    assert metrics.kl is None and metrics.loss > 0
    assert recipe.sink_token_id is None


def test_resumed_run_continues_exactly():
    config = DistillConfig(sink_token="<sink>", opening=False, steps=6, warmup_steps=1, learning_rate=2e-3,
                           lora=LoraSettings(rank=4), block_dropout=0.5)
    examples = _examples()
    straight = _recipe(config)
    for i in range(4):
        straight.train_step(examples[i % 4 : i % 4 + 1])
    first = _recipe(config)
    for i in range(2):
        first.train_step(examples[i : i + 1])
    state = first.state_dict()
    resumed = _recipe(config)
    resumed.load_state_dict(state)
    for i in range(2, 4):
        resumed.train_step(examples[i : i + 1])
    assert resumed.step == 4
    a, b = straight.adapter().weights, resumed.adapter().weights
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def test_a_run_stopped_and_resumed_from_its_checkpoint_directory_ends_as_one_straight_run(tmp_path):
    from blockrag.distill.training import LocalCheckpoint, run_steps

    config = DistillConfig(sink_token="<sink>", opening=False, steps=6, warmup_steps=1, learning_rate=2e-3,
                           lora=LoraSettings(rank=4), block_dropout=0.5, examples_per_step=1, checkpoint_every=4)
    examples = _examples()
    straight = _recipe(config)
    run_steps(straight, examples, 6)
    first = _recipe(config)
    assert not LocalCheckpoint(tmp_path).resume(first)  # nothing saved yet
    stops = iter([False, True])  # a signal during step 2: checkpointed there, before checkpoint_every
    run_steps(first, examples, 6, on_checkpoint=LocalCheckpoint(tmp_path).save, should_stop=lambda: next(stops))
    assert first.step == 2
    resumed = _recipe(config)
    assert LocalCheckpoint(tmp_path).resume(resumed) and resumed.step == 2
    run_steps(resumed, examples, 6, on_checkpoint=LocalCheckpoint(tmp_path).save)
    a, b = straight.adapter().weights, resumed.adapter().weights
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    with pytest.raises(InvalidRequestError, match="another config"):
        LocalCheckpoint(tmp_path).resume(_recipe(replace(config, steps=7)))


def test_config_validation_and_round_trip():
    config = DistillConfig(block_dropout=0.1, lora=LoraSettings(rank=4))
    assert DistillConfig.from_dict(config.to_dict()) == config
    with pytest.raises(InvalidRequestError, match="block_dropout"):
        DistillConfig(block_dropout=1.5)
    with pytest.raises(InvalidRequestError, match="unknown keys"):
        DistillConfig.from_dict({"stepz": 3})
    with pytest.raises(InvalidRequestError, match="no token_weighting"):
        DistillConfig(objective="ce")
    with pytest.raises(InvalidRequestError, match="rank"):
        LoraSettings(rank=0)
