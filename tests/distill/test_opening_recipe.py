"""Block distillation with a shared opening instead of sinks: the student's layout, the config's
rules and the adapter's record (the student's forward against the engine: test_method.py)."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_model

from blockrag.attention.layout import Opening
from blockrag.distill.adapter import Adapter
from blockrag.distill.config import DistillConfig, LoraSettings
from blockrag.distill.example import Example, build_layout
from blockrag.distill.recipe import DistillationRecipe
from blockrag.errors import InvalidRequestError

TOKENS = (7, 8, 9)
OPENING = Opening(TOKENS, gap=4)
QUESTION = Example.of([TOKENS, [20, 21], [30, 31, 32]], [40, 41], [50, 51])  # a served prompt's shape
CONTINUATION = Example.of([[20, 21], [30, 31, 32]], [40, 41], [50, 51])  # raw text: no opening


def test_layout_gives_each_later_block_a_copy_of_the_opening():
    layout = build_layout(QUESTION, None, global_blocks={2}, opening=OPENING)
    assert layout.teacher_ids.tolist() == [7, 8, 9, 20, 21, 30, 31, 32, 40, 41, 50, 51]
    # block 1 after its copy of the opening; block 2 is global (dropout): it sees the real one, no copy
    assert layout.student_ids.tolist() == [7, 8, 9, 7, 8, 9, 20, 21, 30, 31, 32, 40, 41, 50, 51]
    assert layout.student_positions.tolist() == [0, 1, 2, -4, -3, -2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    m = layout.student_mask
    assert m[6, 3] and not m[6, 0]  # block 1 sees its copy, not the opening at positions 0..2
    assert m[8, 0] and m[8, 6] and not m[8, 3]  # the global block sees the prompt, never a copy
    assert m[12, 0] and m[12, 7] and not m[12, 5]  # the final block likewise
    # supervised: global block 2 (30 -> 31, 31 -> 32), then 41 -> 50, 50 -> 51
    assert layout.student_ids[layout.student_index].tolist() == [30, 31, 41, 50]
    assert layout.teacher_ids[layout.teacher_index].tolist() == [30, 31, 41, 50]
    assert layout.labels.tolist() == [31, 32, 50, 51]
    assert layout.answer.tolist() == [False, False, True, True]


def test_raw_text_gets_the_opening_every_served_prompt_has():
    layout = build_layout(CONTINUATION, None, opening=OPENING)
    assert layout.teacher_ids.tolist()[:5] == [7, 8, 9, 20, 21]
    assert layout.student_ids.tolist()[:8] == [7, 8, 9, 7, 8, 9, 20, 21]
    assert layout.labels.tolist() == [50, 51]


def test_the_lead_block_sees_the_real_opening_and_is_not_supervised_for_it():
    """[7 8 9] [20 21] [30 31] + final: the first passage read as served (lead form), the second
    after its own copy of the opening."""
    example = Example.of([[7, 8, 9], [20, 21], [30, 31]], [40], [50, 51])
    layout = build_layout(example, None, opening=OPENING, lead=True)
    assert layout.student_ids.tolist() == [7, 8, 9, 20, 21, 7, 8, 9, 30, 31, 40, 50, 51]
    assert layout.student_positions[:5].tolist() == [0, 1, 2, 3, 4]  # no gap before the lead block
    m = layout.student_mask
    assert m[3, 0] and m[4, 2]  # the lead block sees the real opening
    assert not m[8, 0] and not m[8, 3] and m[8, 5]  # the next block: its copy only
    assert m[10, 0] and m[10, 3] and not m[10, 5]  # the final block: the real segments only
    # supervised: the answer alone, as without the lead (dropout's global blocks add theirs)
    assert layout.labels.tolist() == [50, 51] and layout.answer.tolist() == [True, True]
    plain = build_layout(example, None, opening=OPENING)
    assert not plain.student_mask[3, 0]
    with pytest.raises(InvalidRequestError, match="needs an opening"):
        build_layout(example, None, lead=True)


@pytest.mark.parametrize("lead", [True, False])
def test_the_recipe_trains_the_first_passage_as_served_unless_told_not_to(lead):
    config = DistillConfig(lead_block=lead, block_dropout=0.0, lora=LoraSettings(rank=2))
    recipe = DistillationRecipe(config, tiny_model("llama31"), None, OPENING)
    recipe.setup()
    layout = recipe._layout(Example.of([[7, 8, 9], [20, 21], [30, 31]], [40], [50, 51]))
    assert bool(layout.student_mask[3, 0]) is lead  # the first passage sees the real opening


def test_config_and_recipe_take_the_opening_exactly_when_asked():
    with pytest.raises(InvalidRequestError, match="sink_token=null"):
        DistillConfig(sink_token="<|endoftext|>")  # opening is the default: sinks must turn it off
    assert (DistillConfig().opening, DistillConfig().sink_token) == (True, None)  # the shipped adapter's
    config = DistillConfig(opening=True, sink_token=None, lora=LoraSettings(rank=2))
    with pytest.raises(InvalidRequestError, match="opening must be given"):
        DistillationRecipe(config, tiny_model("llama31"), None)
    with pytest.raises(InvalidRequestError, match="opening must be given"):
        DistillationRecipe(DistillConfig(opening=False), tiny_model("llama31"), None, OPENING)


def test_training_with_an_opening_lowers_its_kl_and_the_adapter_records_it():
    config = DistillConfig(opening=True, sink_token=None, steps=30, warmup_steps=2, learning_rate=3e-3,
                           lora=LoraSettings(rank=8), block_dropout=0.25, token_weighting=0.5)
    model = tiny_model("llama31")
    model.set_attn_implementation("block_sdpa")
    recipe = DistillationRecipe(config, model, None, OPENING)
    recipe.setup()
    g = torch.Generator().manual_seed(3)
    examples = [Example.of([TOKENS] * (i % 2) + [torch.randint(10, 97, (6,), generator=g).tolist() for _ in range(3)],
                           torch.randint(10, 97, (3,), generator=g).tolist(),
                           torch.randint(10, 97, (6,), generator=g).tolist()) for i in range(2)]
    before = recipe.evaluate(examples)
    for _ in range(30):
        recipe.train_step(examples)
    assert before > 1e-4 and recipe.evaluate(examples) < 0.5 * before
    back = Adapter.from_bytes(recipe.adapter().to_bytes(bits=4))
    assert back.opening == OPENING and back.sink_token_id is None


@pytest.mark.parametrize("overrides, message", [
    ({"steps": 1.5}, "steps must be a whole number, got 1.5"),
    ({"steps": float("inf")}, "steps must be a whole number, got inf"),
    ({"learning_rate": float("nan")}, "learning_rate must be a finite number, got nan"),
    ({"block_dropout": "0.2"}, "block_dropout must be a finite number, got '0.2'"),
    ({"seed": True}, "seed must be a whole number, got True"),
    ({"opening": "yes"}, "opening and lead_block must be true or false"),
    ({"lead_block": 1}, "opening and lead_block must be true or false"),
    ({"lora": 3}, "lora must be an object of LoRA settings"),
    ({"lora": {"rank": 2.5}}, "lora rank must be a whole number, got 2.5"),
    ({"lora": {"target_modules": "q_proj"}}, "lora target_modules must be a list of module names"),
])
def test_config_values_of_the_wrong_type_get_a_message_that_names_them(overrides, message):
    # found by fuzzing StartDistillation's config_json: these passed, or failed with Python's own words
    with pytest.raises(InvalidRequestError) as refused:
        DistillConfig.from_dict(overrides)
    assert message in str(refused.value) and "blockrag." not in str(refused.value)


def test_the_configs_default_gap_is_the_engines():
    from blockrag.attention.layout import DEFAULT_GAP

    assert DistillConfig().opening_gap == DEFAULT_GAP
