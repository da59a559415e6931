"""Fidelity: how close block attention comes to full attention, measured on the serving path.

For each question (passages + question, and a way to score an answer):
- the full-attention answer: the base model, one causal prefill of the whole prompt, greedy;
- the block-attention answer: an engine (the base, or a distilled version with its sinks)
  encoding each passage alone and prefilling the question over the cached blocks, greedy;
- the answer-token KL: with the full-attention answer as the continuation, KL(full || block)
  of the next-token distributions at every answer token (and at the stop token that ended it).

Both paths are the engine's own public verbs, so the figures are those a user would get.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import torch

from blockrag.attention import BlockAttentionEngine, BlockKV
from blockrag.distill.adapter import Adapter
from blockrag.distill.qa_set import build_qa_set, is_correct
from blockrag.prompt import PromptTemplate


@dataclass(frozen=True)
class Question:
    passages: tuple[str, ...]
    question: str
    is_correct: Callable[[str], bool]
    answer_passage: int | None = None  # index of the passage that holds the answer, when known


def qa_questions(n: int, split: str = "heldout") -> list[Question]:
    """The first n questions of a split of the project's QA set (held out: never in training data)."""
    return [Question(item.passages, item.question, lambda text, item=item: is_correct(text, item), item.answer_passage)
            for item in build_qa_set(n, seed=0, split=split)]


def served_engine(adapter: Adapter, base_model) -> BlockAttentionEngine:
    """The engine a version serves: the base with the adapter merged (in place), its sinks or opening."""
    return BlockAttentionEngine(adapter.merge_into(base_model), sink_token_id=adapter.sink_token_id,
                                opening=adapter.opening, fuse=False, cuda_graphs=False)


def greedy_answer(engine: BlockAttentionEngine, kvs: Sequence[BlockKV], final: Sequence[int],
                  max_new_tokens: int) -> list[int]:
    """The greedy answer and, when it stopped before the budget, the stop token that ended it
    (a position whose distribution counts too: a student must learn when to stop)."""
    return ended_answer(list(engine.generate(kvs, final, max_new_tokens)), max_new_tokens, engine.stop_ids)


def ended_answer(tokens: Sequence[int], max_new_tokens: int, stop_ids: Collection[int]) -> list[int]:
    """The tokens before the first stop id, then min(stop_ids) when the answer stopped within
    max_new_tokens: the one form of a greedy answer (here and in teacher.greedy_answers)."""
    cut = next((j for j, t in enumerate(tokens) if t in stop_ids), len(tokens))
    answer = list(tokens[:cut])
    if len(answer) < max_new_tokens and stop_ids:
        answer.append(min(stop_ids))
    return answer


@dataclass(frozen=True)
class FidelityResult:
    """accuracy in [0, 1]; kl: mean nats per answer token (None for full attention itself).
    by_position: answer passage index -> (correct, questions), over the questions that know it
    (block attention loses most where the answer sits far from the question); kl_by_position:
    answer passage index -> (mean KL, answer tokens), empty for full attention."""

    questions: int
    correct: int
    kl: float | None
    answer_tokens: int
    by_position: dict[int, tuple[int, int]] = field(default_factory=dict)
    kl_by_position: dict[int, tuple[float, int]] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.correct / max(1, self.questions)


class FidelityProbe:
    """Full-attention references computed once, then any number of block-attention engines
    scored against them."""

    def __init__(self, base: BlockAttentionEngine, template: PromptTemplate, questions: Sequence[Question],
                 max_new_tokens: int = 32, progress: Callable[[int, int], None] | None = None):
        self.template, self.questions, self.max_new_tokens = template, list(questions), max_new_tokens
        self.tokenizer = template.tokenizer
        self.prompts = [self._prompt(q) for q in self.questions]
        self.full_answers: list[list[int]] = []  # greedy, with the stop token when it stopped
        self.full_logits: list[torch.Tensor] = []  # [answer tokens (+ stop), V] per question
        for i, (blocks, final) in enumerate(self.prompts):
            ids = [t for b in blocks for t in b] + final
            targets = greedy_answer(base, [], ids, self.max_new_tokens)
            self.full_answers.append(targets)
            self.full_logits.append(base.full_prefill(ids + targets[:-1], logits_to_keep=len(targets)).logits)
            if progress:
                progress(i + 1, len(self.prompts))
        outcomes = [q.is_correct(self.tokenizer.decode(a, skip_special_tokens=True))
                     for q, a in zip(self.questions, self.full_answers)]
        self.full = FidelityResult(len(self.questions), sum(outcomes), None, sum(map(len, self.full_logits)),
                                   self._by_position(outcomes))

    def _prompt(self, q: Question) -> tuple[list[list[int]], list[int]]:
        blocks = [self.template.prefix_ids()] + [self.template.block_ids(p) for p in q.passages]
        return blocks, self.template.final_ids(q.question)

    def score(self, engine: BlockAttentionEngine, progress: Callable[[int, int], None] | None = None,
              exact_first_passage: bool = True) -> FidelityResult:
        """Accuracy and answer-token KL of block attention through `engine`, as the platform
        serves it: with exact_first_passage (the platform's default) the first passage comes in
        its lead form on an engine with an opening (BlockResolver._lead)."""
        outcomes, kl_sum, tokens = [], 0.0, 0
        per_position: dict[int, tuple[float, int]] = {}  # answer passage -> (KL sum, tokens)
        for i, (q, (blocks, final)) in enumerate(zip(self.questions, self.prompts)):
            kvs = engine.encode_blocks(blocks)
            if exact_first_passage and engine.opening is not None and len(blocks) > 1:
                kvs[1] = engine.encode_lead(blocks[1])
            answer = list(engine.generate(kvs, final, self.max_new_tokens))
            outcomes.append(q.is_correct(self.tokenizer.decode(answer, skip_special_tokens=True)))
            targets = self.full_answers[i]
            block = engine.prefill(kvs, final + targets[:-1], logits_to_keep=len(targets)).logits
            full = self.full_logits[i]
            log_full, log_block = torch.log_softmax(full, -1), torch.log_softmax(block, -1)
            kl = float((log_full.exp() * (log_full - log_block)).sum())
            kl_sum, tokens = kl_sum + kl, tokens + len(targets)
            if q.answer_passage is not None:
                total, n = per_position.get(q.answer_passage, (0.0, 0))
                per_position[q.answer_passage] = (total + kl, n + len(targets))
            if progress:
                progress(i + 1, len(self.questions))
        return FidelityResult(len(self.questions), sum(outcomes), kl_sum / max(1, tokens), tokens,
                              self._by_position(outcomes),
                              {p: (total / n, n) for p, (total, n) in sorted(per_position.items())})

    def _by_position(self, outcomes: Sequence[bool]) -> dict[int, tuple[int, int]]:
        counts: dict[int, tuple[int, int]] = {}
        for q, ok in zip(self.questions, outcomes):
            if q.answer_passage is not None:
                right, n = counts.get(q.answer_passage, (0, 0))
                counts[q.answer_passage] = (right + int(ok), n + 1)
        return dict(sorted(counts.items()))
