"""The compression gate: the drift of answers read from compressed KV, measured on a tiny model
whose answers are sharp enough to move, and the gate refusing a setting past its thresholds."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest
import torch
from tiny_versions import save_tiny_llama

from blockrag.attention import BlockAttentionEngine, BlockKV
from blockrag.kvcache.compression import KVCompression
from blockrag.kvcache.compression_gate import (
    CompressionDriftError,
    CompressionGate,
    DriftProbe,
    DriftReport,
    check_compression,
)
from blockrag.prompt import PromptTemplate


@dataclass(frozen=True)
class Q:
    passages: tuple[str, ...]
    question: str
    expected: str = ""  # the reference's own answer text: right iff the answer is unchanged

    def is_correct(self, text: str) -> bool:
        return text == self.expected


PASSAGES = [("The ferry leaves at nine.", "Tickets cost four crowns."),
            ("Harbour office opens at seven.", "The mayor is Ilse Varn.", "Rain is likely."),
            ("Skarvholm has two bakeries.",)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny random Llama whose final norm is scaled up: its next-token distributions are peaked
    (random weights alone give near-uniform ones, on which no KV change would show)."""
    from blockrag.models import load_model

    model, tokenizer = load_model(str(save_tiny_llama(tmp_path_factory.mktemp("tiny"))))
    with torch.no_grad():
        model.model.norm.weight.mul_(30.0)
    engine = BlockAttentionEngine(model)
    template = PromptTemplate(tokenizer)
    questions = [Q(p, "When does it leave?") for p in PASSAGES]
    first = DriftProbe(engine, template, questions, max_new_tokens=8)
    # questions that count an answer right iff it is the reference's (so accuracy moves with answers)
    answers = [tokenizer.decode(r.answer, skip_special_tokens=True) for r in first.references]
    questions = [replace(q, expected=a) for q, a in zip(questions, answers)]
    return engine, template, DriftProbe(engine, template, questions, max_new_tokens=8)


def wrong_scale(kv: BlockKV) -> BlockKV:
    """A deliberately broken compression: its decoder applies 8x the scale it should."""
    return BlockKV(kv.token_ids, kv.keys * 8, kv.values * 8)


def test_uncompressed_has_no_drift(setup) -> None:
    _, _, probe = setup
    report = probe.score(KVCompression.NONE)
    assert report.kl == 0.0 and report.max_question_kl == 0.0
    assert report.same_answers == report.questions == 3 and report.correct == report.reference_correct == 3
    assert report.answer_tokens == sum(len(r.answer) for r in probe.references) > 3


@pytest.mark.parametrize("setting", [KVCompression.INT8_TOKEN, KVCompression.INT8_HEAD, KVCompression.FP8_HEAD])
def test_real_settings_drift_little_and_pass(setup, setting: KVCompression) -> None:
    _, _, probe = setup
    report = probe.score(setting)
    assert 0.0 < report.kl < 0.02  # lossy, within the gate
    assert CompressionGate().check(report) is report


def test_finer_scales_drift_less(setup) -> None:
    _, _, probe = setup
    assert probe.score(KVCompression.INT8_TOKEN).kl < probe.score(KVCompression.FP8_HEAD).kl


def test_a_lossy_setting_is_refused(setup) -> None:
    _, _, probe = setup
    report = probe.score(KVCompression.INT8_HEAD, roundtrip=wrong_scale)
    assert report.kl > 0.02
    with pytest.raises(CompressionDriftError, match=r"answer-token KL of \d+\.\d{4} nats over 3 questions"):
        CompressionGate().check(report)
    # past the KL gate, the accuracy gate refuses it too: its answers changed
    assert report.correct < report.reference_correct
    with pytest.raises(CompressionDriftError, match="accuracy"):
        CompressionGate(max_kl=math.inf).check(report)


def test_check_compression_measures_and_gates(setup) -> None:
    engine, template, probe = setup
    report = check_compression(engine, template, "int8_token", probe.questions)
    assert report.questions == 3 and 0.0 < report.kl < 0.02
    with pytest.raises(CompressionDriftError, match="kv_compression fp8_head"):
        check_compression(engine, template, KVCompression.FP8_HEAD, probe.questions, CompressionGate(max_kl=1e-9))
    assert check_compression(engine, template, "none", []).questions == 0  # nothing to measure


def report(kl: float, reference_correct: int = 50, correct: int = 50, scored: int = 100) -> DriftReport:
    return DriftReport("int8_token", 100, 1000, kl, kl, scored, reference_correct, correct, 90)


@pytest.mark.parametrize(("r", "passes"), [
    (report(0.02), True), (report(0.0201), False), (report(float("nan")), False),
    (report(0.0, 50, 49), True),  # one point of 100 questions: within the gate
    (report(0.0, 50, 48), False),
    (report(0.0, 50, 60), True),  # better is not drift to refuse
    (report(0.0, 0, 0, scored=0), True),  # nothing scored: the KL alone decides
])
def test_gate_thresholds(r: DriftReport, passes: bool) -> None:
    if passes:
        assert CompressionGate().check(r) is r
    else:
        with pytest.raises(CompressionDriftError):
            CompressionGate().check(r)


def test_combine_weights_kl_by_answer_tokens() -> None:
    a = DriftReport("int8_token", 1, 10, 0.01, 0.01, 1, 1, 1, 1)
    b = DriftReport("int8_token", 2, 30, 0.05, 0.07, 2, 1, 0, 1)
    both = DriftReport.combine([a, b])
    assert (both.questions, both.answer_tokens, both.scored, both.reference_correct, both.correct) == (3, 40, 3, 2, 1)
    assert both.kl == pytest.approx((0.1 + 1.5) / 40) and both.max_question_kl == 0.07 and both.same_answers == 2
