"""The fidelity probe: answer-token KL against full attention, accuracy by answer position."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from blockrag.attention import BlockAttentionEngine
from blockrag.distill.fidelity import FidelityProbe, Question
from blockrag.models import load_tokenizer
from blockrag.prompt import PromptTemplate


def _engine(vocab: int, seed: int) -> BlockAttentionEngine:
    torch.manual_seed(seed)  # a tiny random Llama over the default model's vocabulary
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa")
    return BlockAttentionEngine(AutoModelForCausalLM.from_config(config).eval(), fuse=False, cuda_graphs=False)


@pytest.fixture(scope="module")
def setup():
    tokenizer = load_tokenizer()
    return _engine(len(tokenizer), 0), PromptTemplate(tokenizer)


def test_block_attention_over_one_block_has_no_divergence(setup):
    # no passages: the prompt is the template's opening block and the final block, and block
    # attention over a single block is full attention: the KL is 0 up to rounding
    engine, template = setup
    probe = FidelityProbe(engine, template, [Question((), "Where is the mill?", lambda text: True)], max_new_tokens=6)
    result = probe.score(engine)
    assert result.answer_tokens == len(probe.full_answers[0]) > 0
    assert result.kl == pytest.approx(0.0, abs=1e-5)
    assert result.by_position == {}  # the question says nowhere where its answer is


def test_divergence_and_accuracy_by_answer_position(setup):
    engine, template = setup
    passages = ("The mill on the Quill was built in 1810.", "Alder kept bees by the river.",
                "The valley's grain went north.")
    questions = [Question(passages, "When was the mill built?", lambda text: True, answer_passage=0),
                 Question(passages[::-1], "When was the mill built?", lambda text: True, answer_passage=2),
                 Question(passages, "Who kept bees?", lambda text: False, answer_passage=2)]
    probe = FidelityProbe(engine, template, questions, max_new_tokens=6)
    assert probe.full.correct == 2
    assert probe.full.by_position == {0: (1, 1), 2: (1, 2)}
    result = probe.score(engine)
    assert result.by_position == {0: (1, 1), 2: (1, 2)}
    assert result.answer_tokens == sum(map(len, probe.full_answers))
    lengths = [len(a) for a in probe.full_answers]
    assert {p: n for p, (_, n) in result.kl_by_position.items()} == {0: lengths[0], 2: lengths[1] + lengths[2]}
    # a position's figure is its questions' mean: position 0 holds only the first question,
    # whose KL a probe of that question alone measures on its own
    alone = FidelityProbe(engine, template, questions[:1], max_new_tokens=6).score(engine)
    assert result.kl_by_position[0] == (pytest.approx(alone.kl, rel=1e-6), alone.answer_tokens)
    assert probe.full.kl_by_position == {}
    # scored against the full-attention answers of the probe's model, another model diverges
    # far more than the same model's block attention does
    other = probe.score(_engine(len(template.tokenizer), 1))
    assert other.kl > 100 * result.kl > 0
