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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from blockrag.attention import BlockAttentionEngine
from blockrag.prompt import PromptTemplate


@dataclass(frozen=True)
class Question:
    passages: tuple[str, ...]
    question: str
    is_correct: Callable[[str], bool]


@dataclass(frozen=True)
class FidelityResult:
    """accuracy in [0, 1]; kl: mean nats per answer token (None for full attention itself)."""

    questions: int
    correct: int
    kl: float | None
    answer_tokens: int

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
        self.stop = min(base.stop_ids) if base.stop_ids else None
        self.prompts = [self._prompt(q) for q in self.questions]
        self.full_answers: list[list[int]] = []
        self.full_logits: list[torch.Tensor] = []  # [answer tokens (+ stop), V] per question
        for i, (blocks, final) in enumerate(self.prompts):
            ids = [t for b in blocks for t in b] + final
            answer = list(base.generate([], ids, self.max_new_tokens))
            self.full_answers.append(answer)
            targets = self._targets(answer)
            self.full_logits.append(base.full_prefill(ids + targets[:-1], logits_to_keep=len(targets)).logits)
            if progress:
                progress(i + 1, len(self.prompts))
        self.full = FidelityResult(len(self.questions), sum(
            q.is_correct(self.tokenizer.decode(a, skip_special_tokens=True)) for q, a in zip(self.questions, self.full_answers)),
            None, sum(map(len, self.full_logits)))

    def _prompt(self, q: Question) -> tuple[list[list[int]], list[int]]:
        blocks = [self.template.prefix_ids()] + [self.template.block_ids(p) for p in q.passages]
        return blocks, self.template.final_ids(q.question)

    def _targets(self, answer: list[int]) -> list[int]:
        """The answer and, when it stopped before the budget, the stop token (a position too)."""
        if len(answer) < self.max_new_tokens and self.stop is not None:
            return answer + [self.stop]
        return answer

    def score(self, engine: BlockAttentionEngine, progress: Callable[[int, int], None] | None = None) -> FidelityResult:
        """Accuracy and answer-token KL of block attention through `engine`."""
        correct, kl_sum, tokens = 0, 0.0, 0
        for i, (q, (blocks, final)) in enumerate(zip(self.questions, self.prompts)):
            kvs = engine.encode_blocks(blocks)
            answer = list(engine.generate(kvs, final, self.max_new_tokens))
            correct += q.is_correct(self.tokenizer.decode(answer, skip_special_tokens=True))
            targets = self._targets(self.full_answers[i])
            block = engine.prefill(kvs, final + targets[:-1], logits_to_keep=len(targets)).logits
            full = self.full_logits[i]
            log_full, log_block = torch.log_softmax(full, -1), torch.log_softmax(block, -1)
            kl_sum += float((log_full.exp() * (log_full - log_block)).sum())
            tokens += len(targets)
            if progress:
                progress(i + 1, len(self.questions))
        return FidelityResult(len(self.questions), correct, kl_sum / max(1, tokens), tokens)
