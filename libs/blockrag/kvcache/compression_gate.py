"""The quality gate of a KV compression setting: do answers read from compressed KV drift from
answers read from the KV as computed?

For each question (passages and a question; optionally a way to score an answer) the engine
encodes the prompt's blocks once, then:
- the reference: the greedy answer over the uncompressed blocks (cut at the first stop token,
  which counts as an answer token when the answer stopped within the budget), and the
  next-token distributions at every one of its tokens (one prefill);
- the candidate: the same blocks through compress -> decompress, the same prefill with the
  reference answer as continuation, and its own greedy answer (for accuracy and agreement).

KL(uncompressed || compressed) is summed over answer tokens and divided by their number: the
mean answer-token KL, the figure bench/fidelity.py reports against full attention. The gate
refuses a setting whose mean KL exceeds ``max_kl`` or whose accuracy (where questions can be
scored) falls more than ``max_accuracy_drop`` below the reference's: CompressionDriftError.

Both paths are the engine's public verbs (encode_blocks, generate, prefill), so the figures are
those a deployment serving from its store and host tiers would get.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch

from blockrag.attention import BlockAttentionEngine, BlockKV
from blockrag.errors import EngineCorrectnessError
from blockrag.kvcache.compression import KVCompression
from blockrag.kvcache.quantize import compress
from blockrag.prompt import PromptTemplate

MAX_KL = 0.02  # nats per answer token (issue 11's target)
MAX_ACCURACY_DROP = 0.01  # one point

log = logging.getLogger("blockrag.kvcache.compression_gate")
Version = TypeVar("Version")  # a registry ModelVersion (version_id)
Runtime = TypeVar("Runtime")  # a ModelRuntime (engine, template)


class DriftQuestion(Protocol):
    """What the gate needs of a question (blockrag.distill.fidelity.Question has it)."""

    passages: Sequence[str]
    question: str

    def is_correct(self, text: str) -> bool: ...


class CompressionDriftError(EngineCorrectnessError):
    """Answers read from KV under a compression setting drift from the uncompressed ones past the
    gate: the setting must not be served for this model."""


@dataclass(frozen=True)
class DriftReport:
    """How far one setting moves answers. kl: mean nats per answer token; max_question_kl: the
    largest per-question mean; accuracy of both sides over the scored questions (None if none
    could be scored); same_answers: questions whose greedy answers are identical."""

    compression: str
    questions: int
    answer_tokens: int
    kl: float
    max_question_kl: float
    scored: int
    reference_correct: int
    correct: int
    same_answers: int

    @property
    def reference_accuracy(self) -> float | None:
        return self.reference_correct / self.scored if self.scored else None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None

    @classmethod
    def combine(cls, reports: Sequence[DriftReport]) -> DriftReport:
        """One report over the questions of several (of one setting): counts add up, the KL is
        re-weighted by answer tokens."""
        tokens = sum(r.answer_tokens for r in reports)
        return cls(reports[0].compression, sum(r.questions for r in reports), tokens,
                   sum(r.kl * r.answer_tokens for r in reports) / max(1, tokens),
                   max(r.max_question_kl for r in reports), sum(r.scored for r in reports),
                   sum(r.reference_correct for r in reports), sum(r.correct for r in reports),
                   sum(r.same_answers for r in reports))

    def to_dict(self) -> dict:
        return {"compression": self.compression, "questions": self.questions, "answer_tokens": self.answer_tokens,
                "kl": self.kl, "max_question_kl": self.max_question_kl, "scored": self.scored,
                "reference_correct": self.reference_correct, "correct": self.correct,
                "reference_accuracy": self.reference_accuracy, "accuracy": self.accuracy,
                "same_answers": self.same_answers}


@dataclass(frozen=True)
class _Reference:
    kvs: list[BlockKV]
    final: list[int]
    answer: list[int]  # greedy, with the stop token when it stopped within the budget
    log_probs: torch.Tensor  # [answer tokens, V] log-softmax over the uncompressed KV
    correct: bool | None


class DriftProbe:
    """References over uncompressed KV, computed once; any number of settings scored against them."""

    def __init__(self, engine: BlockAttentionEngine, template: PromptTemplate, questions: Sequence[DriftQuestion],
                 max_new_tokens: int = 32, progress: Callable[[int, int], None] | None = None):
        if not questions:
            raise ValueError("the drift probe needs at least one question")
        self.engine, self.template, self.max_new_tokens = engine, template, max_new_tokens
        self.references: list[_Reference] = []
        for i, q in enumerate(questions):
            blocks = [template.prefix_ids()] + [template.block_ids(p) for p in q.passages]
            final = template.final_ids(q.question)
            kvs = engine.encode_blocks(blocks)
            answer = self._answer(kvs, final)
            self.references.append(_Reference(kvs, final, answer, self._log_probs(kvs, final, answer),
                                              self._correct(q, answer)))
            if progress:
                progress(i + 1, len(questions))
        self.questions = list(questions)

    def score(self, compression: KVCompression,
              roundtrip: Callable[[BlockKV], BlockKV] | None = None) -> DriftReport:
        """The drift of ``compression`` (its compress -> decompress), or of ``roundtrip`` when
        given (any KV transformation, named ``compression`` in the report)."""
        if roundtrip is None:
            if compression is KVCompression.NONE:
                roundtrip = _identity
            else:
                def roundtrip(kv: BlockKV) -> BlockKV:
                    return compress(kv, compression).decompress()
        kl_sum, tokens, worst, scored, ref_right, right, same = 0.0, 0, 0.0, 0, 0, 0, 0
        for q, ref in zip(self.questions, self.references):
            kvs = [roundtrip(kv) for kv in ref.kvs]
            log_probs = self._log_probs(kvs, ref.final, ref.answer)
            # KL(reference || compressed) at each answer token: [answer tokens]
            kl = (ref.log_probs.exp() * (ref.log_probs - log_probs)).sum(-1)
            kl_sum, tokens = kl_sum + float(kl.sum()), tokens + len(ref.answer)
            worst = max(worst, float(kl.mean()))
            # greedy decoding is a function of these distributions: where every position's argmax
            # is the reference token, the greedy answer is the reference answer (no decode needed)
            agrees = bool((log_probs.argmax(-1) == torch.tensor(ref.answer)).all())
            answer = ref.answer if agrees else self._answer(kvs, ref.final)
            same += answer == ref.answer
            correct = self._correct(q, answer)
            if correct is not None and ref.correct is not None:
                scored, ref_right, right = scored + 1, ref_right + ref.correct, right + correct
        return DriftReport(str(compression), len(self.references), tokens, kl_sum / max(1, tokens), worst,
                           scored, ref_right, right, same)

    def _answer(self, kvs: Sequence[BlockKV], final: list[int]) -> list[int]:
        tokens = list(self.engine.generate(kvs, final, self.max_new_tokens))
        stops = self.engine.stop_ids
        cut = next((j for j, t in enumerate(tokens) if t in stops), len(tokens))
        answer = tokens[:cut]
        if len(answer) < self.max_new_tokens and stops:
            answer.append(min(stops))
        return answer

    def _log_probs(self, kvs: Sequence[BlockKV], final: list[int], answer: list[int]) -> torch.Tensor:
        logits = self.engine.prefill(kvs, final + answer[:-1], logits_to_keep=len(answer)).logits
        return torch.log_softmax(logits.float().reshape(len(answer), -1), -1)

    def _correct(self, q: DriftQuestion, answer: list[int]) -> bool | None:
        is_correct = getattr(q, "is_correct", None)
        if is_correct is None:
            return None
        return bool(is_correct(self.template.tokenizer.decode(answer, skip_special_tokens=True)))


@dataclass(frozen=True)
class CompressionGate:
    """The thresholds a setting must meet to be served."""

    max_kl: float = MAX_KL
    max_accuracy_drop: float = MAX_ACCURACY_DROP

    def check(self, report: DriftReport) -> DriftReport:
        """``report`` when it passes; CompressionDriftError naming the figure that failed."""
        if not report.kl <= self.max_kl:  # a NaN KL fails too
            raise CompressionDriftError(
                f"kv_compression {report.compression}: answers drift from uncompressed KV by a mean "
                f"answer-token KL of {report.kl:.4f} nats over {report.questions} questions, above the gate's "
                f"{self.max_kl:g}; serve it uncompressed (kv_compression: none) or with a finer setting "
                f"(int8_token)")
        if report.scored and report.reference_accuracy - report.accuracy > self.max_accuracy_drop + 1e-12:
            raise CompressionDriftError(
                f"kv_compression {report.compression}: accuracy {100 * report.accuracy:.1f}% against "
                f"{100 * report.reference_accuracy:.1f}% uncompressed on {report.scored} questions, a drop over "
                f"the gate's {100 * self.max_accuracy_drop:g} point(s); serve it uncompressed or with a finer setting")
        return report


def check_compression(engine: BlockAttentionEngine, template: PromptTemplate, compression: KVCompression,
                      questions: Sequence[DriftQuestion], gate: CompressionGate = CompressionGate(),
                      progress: Callable[[int, int], None] | None = None) -> DriftReport:
    """The gate on one engine: the drift of ``compression`` over ``questions``, its report when it
    passes, CompressionDriftError when it does not. NONE passes without a measurement."""
    compression = KVCompression.parse(compression)
    if compression is KVCompression.NONE:
        return DriftReport(compression.value, 0, 0, 0.0, 0.0, 0, 0, 0, 0)
    return gate.check(DriftProbe(engine, template, questions, progress=progress).score(compression))


def gate_runtime(runtime: Runtime, compression: KVCompression | str, questions: int,
                 max_kl: float) -> DriftReport | None:
    """The gate a server runs before it writes ``runtime``'s KV under ``compression`` (Precompute
    at start, each model version it loads, `blockrag local-ask --kv-compression`): the mean
    answer-token KL over ``questions`` held-out QA questions against ``max_kl``, or
    CompressionDriftError. KL alone: an accuracy over a start's few questions moves by whole
    answers (`blockrag model check --kv-compression` checks both on 60). None when nothing is
    measured: no compression, or 0 questions. ``runtime``: a ModelRuntime (engine, template)."""
    compression = KVCompression.parse(compression)
    if compression is KVCompression.NONE or not questions:
        return None
    from blockrag.distill.fidelity import qa_questions

    return check_compression(runtime.engine, runtime.template, compression, qa_questions(questions),
                             CompressionGate(max_kl=max_kl, max_accuracy_drop=math.inf))


def gated_loader(load: Callable[[Version], Runtime], compression: KVCompression | str, questions: int,
                 max_kl: float) -> Callable[[Version], Runtime]:
    """``load`` (a model version -> its runtime, blockrag.served_models.VersionLoader) with
    ``gate_runtime`` after it: a promoted version (a distilled adapter merged into the base)
    changes the KV the setting compresses, so the gate passed by the configured model at start
    says nothing of it. A version past the gate raises CompressionDriftError naming it and is
    not served (the replica records the failed load; its tenants stay on the version they had,
    and Precompute reports it to the registry: ModelRegistry.refuse).
    No compression or no questions: ``load`` itself. The cost, on every load of a version: per
    question, its blocks' encode, two greedy answers and two prefills."""
    if KVCompression.parse(compression) is KVCompression.NONE or not questions:
        return load

    def gated(version: Version) -> Runtime:
        runtime = load(version)
        try:
            report = gate_runtime(runtime, compression, questions, max_kl)
        except CompressionDriftError as e:
            raise CompressionDriftError(
                f"model version {version.version_id} is not served: {e}. The replica reports it to the "
                f"model registry, which marks it failed and rolls its promotion back") from None
        log.info("model version %s passed the kv_compression %s gate: mean answer-token KL %.5f over %d questions",
                 version.version_id, compression, report.kl, report.questions)
        return runtime

    return gated


def _identity(kv: BlockKV) -> BlockKV:
    return kv
