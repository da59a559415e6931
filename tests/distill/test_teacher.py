"""The teacher's batched greedy answers against one-prompt-at-a-time greedy decoding."""

from __future__ import annotations

import random

import pytest
from tiny_models import tiny_model

from blockrag.attention.reference import reference_greedy
from blockrag.distill.teacher import greedy_answers


def _reference(model, prompt, max_new_tokens, stops):
    """Full attention, recomputed from scratch each step, with greedy_answer's stop convention."""
    tokens = reference_greedy(model, [], prompt, max_new_tokens, stops)
    return tokens + [min(stops)] if len(tokens) < max_new_tokens else tokens


@pytest.mark.parametrize("name", ["llama31", "qwen3"])
def test_batched_answers_equal_one_prompt_at_a_time(name):
    model = tiny_model(name, seed=3)
    rng = random.Random(0)
    # lengths 1..40: every batch mixes short and long prompts, so most rows are left-padded
    prompts = [[rng.randrange(3, 97) for _ in range(rng.randint(1, 40))] for _ in range(9)]
    free = [_reference(model, p, 10, {1000}) for p in prompts]  # outside the vocabulary: no stops
    assert all(len(a) == 10 for a in free)
    # stop on tokens the answers do produce, so some rows stop early, at different steps
    stops = {free[0][3], free[1][6]}
    expected = [_reference(model, p, 10, stops) for p in prompts]
    assert any(len(a) < 10 for a in expected) and any(len(a) == 10 for a in expected)
    assert greedy_answers(model, prompts, 10, stops, batch_size=4) == expected
    assert greedy_answers(model, prompts, 10, stops, batch_size=1) == expected
