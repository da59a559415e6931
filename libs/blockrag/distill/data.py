"""Training data without labels: examples from the user's own text and questions.

Two kinds of Example (example.py), mixed:

- continuation: consecutive blocks of one document as the context; the final block is the
  start of the text that follows them and the target is the rest of it (the supervised part is
  the text that follows the blocks). Raw text, no chat template.
- question: the serving prompt exactly (the template's opening block, passage blocks, the
  question and the assistant header); the target is the teacher's own answer under full
  attention. Questions come from the question log (what users asked, over the blocks they
  asked about), from fact questions (facts.py: short factual questions over passages about
  invented entities) or from templates over one of the passages: about a
  term only that passage holds ("What does the text say about X?"), or, for cloze_fraction of
  them, one of its sentences with a value blanked out ('Fill in the blank, using the documents:
  "The line was opened in ___."'). The term questions draw long explanations (most run to the
  answer budget); the cloze questions draw what factual RAG questions draw, a short value found
  in one passage among others and copied, then the end of the answer.

The teacher's answers are computed once per example by `teacher_answers`, a function of a batch
of prompts' token ids (the base model under full attention, greedy): a GPU answers a few dozen
prompts in about the time of one.
"""

from __future__ import annotations

import random
import re
from itertools import islice
from pathlib import Path
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from blockrag.distill.example import Example
from blockrag.distill.facts import fact_questions
from blockrag.documents import read_documents
from blockrag.errors import InvalidRequestError
from blockrag.prompt import PromptTemplate
from blockrag.segment.paragraph import split_paragraphs

TeacherAnswers = Callable[[Sequence[list[int]]], list[list[int]]]  # prompts -> answers, in order

_TERM = re.compile(r"[A-Za-z_][A-Za-z0-9_]{4,}(?:\(\))?")
_STOP = frozenset("""about above after again against because before being below between could does doing
during every first following further having other should their there these those through under until
which while would where whose value values example used using called returns return object objects
method methods function functions class""".split())
_QUESTIONS = (
    "What does the text say about {term}?",
    "According to the documents, what is {term}?",
    "Explain {term} in one sentence, using the documents.",
    "Which document mentions {term}, and what does it say?",
    "Summarize what the documents say about {term}.",
)
_CLOZES = (
    'Fill in the blank, using the documents: "{sentence}"',
    'Which word or number is missing from this sentence of the documents? "{sentence}"',
    'According to the documents, what goes in the blank? "{sentence}"',
)
_BLANK = "___"
_SENTENCE = re.compile(r"(?<![^\s])[A-Z][^.!?]{20,240}[.!?](?=\s|$)")  # from a capital to its stop
# a value worth asking for: a number, a capitalised name inside the sentence, or a term
_VALUE = re.compile(r"(?<=\s)(?:\d[\d,.:]*\d|\d|[A-Z][a-z]+(?: [A-Z][a-z]+)*)(?=[\s,.;:!?)])")


@dataclass(frozen=True)
class DataConfig:
    """Shapes of the examples: blocks per prompt, block and target sizes (tokens)."""

    min_blocks: int = 2
    max_blocks: int = 6
    min_block_tokens: int = 24
    max_block_tokens: int = 160
    target_tokens: int = 64
    final_tokens: int = 4  # continuation examples: how much of the following text is the final block
    answer_tokens: int = 48
    question_fraction: float = 0.75  # the shipped adapter's: questions over passages are what serving sees
    cloze_fraction: float = 0.0  # of the templated questions, the share that blank a value out of a sentence
    # of the question examples, the share of fact questions (facts.py): short factual questions
    # over invented entities, distractor values in the other passages. The shipped adapter's:
    # they took it from 28% to 33% of the held-out fidelity questions and its KL from 0.44 to
    # 0.27 of the base model's (default_adapter/TRAINING.md)
    fact_fraction: float = 0.5
    max_example_tokens: int = 1536  # a question prompt longer than this, answer included, is skipped

    def __post_init__(self) -> None:
        if not (1 <= self.min_blocks <= self.max_blocks and 1 <= self.min_block_tokens <= self.max_block_tokens
                and self.target_tokens >= 2 and self.final_tokens >= 1 and self.answer_tokens >= 1
                and 0 <= self.question_fraction <= 1 and 0 <= self.cloze_fraction <= 1
                and 0 <= self.fact_fraction <= 1):
            raise InvalidRequestError(f"data config out of range: {self}")


def pack_blocks(text: str, tokenizer: PreTrainedTokenizerBase, config: DataConfig) -> list[str]:
    """A document as blocks: paragraphs merged up to max_block_tokens (a longer paragraph is a
    block of its own, cut at max_block_tokens by the caller's tokenizer budget); blocks shorter
    than min_block_tokens are dropped."""
    blocks, current, size = [], [], 0
    for paragraph in split_paragraphs(text):
        n = len(tokenizer(paragraph, add_special_tokens=False).input_ids)
        if current and size + n > config.max_block_tokens:
            blocks.append("\n\n".join(current))
            current, size = [], 0
        current.append(paragraph)
        size += n
    if current:
        blocks.append("\n\n".join(current))
    return [b for b in blocks if len(tokenizer(b, add_special_tokens=False).input_ids) >= config.min_block_tokens]


def continuation_examples(documents: Iterable[Sequence[str]], tokenizer: PreTrainedTokenizerBase,
                          config: DataConfig, rng: random.Random) -> Iterator[Example]:
    """From each document (its blocks in order): windows of consecutive blocks and the block after."""
    for blocks in documents:
        ids = [tokenizer(b.strip() + "\n\n", add_special_tokens=False).input_ids[: config.max_block_tokens]
               for b in blocks]
        start = 0
        while start + config.min_blocks < len(ids):
            k = rng.randint(config.min_blocks, config.max_blocks)
            k = min(k, len(ids) - start - 1)
            # fewer blocks while the window and the text after it exceed the token budget
            while k > config.min_blocks and _window_tokens(ids, start, k, config) > config.max_example_tokens:
                k -= 1
            following = ids[start + k]
            if len(following) > config.final_tokens + 1 and _window_tokens(ids, start, k, config) <= config.max_example_tokens:
                target = following[config.final_tokens : config.final_tokens + config.target_tokens]
                yield Example.of(ids[start : start + k], following[: config.final_tokens], target)
            start += k + 1


def _window_tokens(ids: list[list[int]], start: int, k: int, config: DataConfig) -> int:
    """Tokens of a continuation example: k blocks from `start`, then the final block and target."""
    return sum(map(len, ids[start : start + k])) + min(len(ids[start + k]), config.final_tokens + config.target_tokens)


def question_prompt(template: PromptTemplate, passages: Sequence[str], question: str) -> tuple[list[list[int]], list[int]]:
    """The serving prompt's blocks (opening block, then one per passage) and final block."""
    return [template.prefix_ids()] + [template.block_ids(p) for p in passages], template.final_ids(question)


def question_examples(items: Iterable[tuple[Sequence[str], str]], template: PromptTemplate,
                      teacher_answers: TeacherAnswers, max_tokens: int, batch_size: int = 1) -> Iterator[Example]:
    """(passages, question) pairs -> examples whose target is the teacher's answer; prompts that
    leave no room for an answer within max_tokens are skipped before the teacher runs. The
    teacher answers batch_size prompts per call (the examples come out in the items' order)."""
    pending: list[tuple[list[list[int]], list[int], list[int]]] = []  # blocks, final, prompt

    def answered() -> Iterator[Example]:
        answers = teacher_answers([prompt for _, _, prompt in pending])
        for (blocks, final, prompt), answer in zip(pending, answers):
            answer = answer[: max_tokens - len(prompt)]
            if answer:
                yield Example.of(blocks, final, answer)
        pending.clear()

    for passages, question in items:
        blocks, final = question_prompt(template, passages, question)
        prompt = [t for b in blocks for t in b] + final
        if len(prompt) >= max_tokens:
            continue
        pending.append((blocks, final, prompt))
        if len(pending) == batch_size:
            yield from answered()
    if pending:
        yield from answered()


def templated_questions(passages: Sequence[str], rng: random.Random,
                        cloze_fraction: float = 0.0) -> Iterator[tuple[Sequence[str], str]]:
    """Label-free questions over groups of passages, each about one passage of its group (so the
    answer needs that block): a cloze over one of its sentences (cloze_fraction of the groups,
    where it has a sentence with a value), else a question about a term no other passage holds."""
    for group in _groups(list(passages), rng):
        target = rng.randrange(len(group))
        cloze = cloze_fraction > 0 and rng.random() < cloze_fraction  # at 0, no draw: the stream of older files
        question = (cloze and _cloze(group, target, rng)) or _term_question(group, target, rng)
        if question:
            yield group, question


def _term_question(group: Sequence[str], target: int, rng: random.Random) -> str | None:
    terms = [set(_terms(p)) for p in group]
    only_here = sorted(terms[target] - set().union(*(t for i, t in enumerate(terms) if i != target)))
    return rng.choice(_QUESTIONS).format(term=rng.choice(only_here)) if only_here else None


def _cloze(group: Sequence[str], target: int, rng: random.Random) -> str | None:
    """One sentence of group[target] (6-40 words, found in no other passage of the group) with
    one value blanked: a number or a capitalised name when it has one, else a term."""
    flat = [" ".join(p.split()) for p in group]  # wrapped lines joined: a sentence may span them
    sentences = [m.group(0) for m in _SENTENCE.finditer(flat[target]) if 6 <= len(m.group(0).split()) <= 40
                 and not any(m.group(0) in p for i, p in enumerate(flat) if i != target)]
    rng.shuffle(sentences)
    for sentence in sentences:
        values = [(m.start(), m.end()) for m in _VALUE.finditer(sentence)] or \
                 [(m.start(), m.end()) for m in _TERM.finditer(sentence) if m.group(0).lower() not in _STOP]
        if values:
            start, end = rng.choice(values)
            return rng.choice(_CLOZES).format(sentence=sentence[:start] + _BLANK + sentence[end:])
    return None


def _groups(passages: list[str], rng: random.Random, sizes: tuple[int, int] = (3, 6)) -> Iterator[list[str]]:
    """Random groups of passages, as a retriever would bring them (from several documents)."""
    order = passages[:]
    rng.shuffle(order)
    i = 0
    while i < len(order):
        k = rng.randint(*sizes)
        if i + k > len(order):
            return
        yield order[i : i + k]
        i += k


def _terms(passage: str) -> list[str]:
    return [t for t in _TERM.findall(passage) if t.lower() not in _STOP]


def mixed_examples(documents: Sequence[str], tokenizer: PreTrainedTokenizerBase, template: PromptTemplate,
                   teacher_answers: TeacherAnswers, config: DataConfig, count: int, seed: int,
                   logged: Sequence[tuple[Sequence[str], str]] = (),
                   progress: Callable[[int, int], None] | None = None, batch_size: int = 1) -> list[Example]:
    """`count` examples: logged questions first, then fact questions (fact_fraction of the
    question examples), templated questions and continuations in the ratio question_fraction,
    all shuffled with `seed`. batch_size: prompts per call of the
    teacher (the examples do not depend on it, up to the teacher's own arithmetic)."""
    if count < 1:
        raise InvalidRequestError("count must be >= 1")
    rng = random.Random(seed)
    blocked = [pack_blocks(d, tokenizer, config) for d in documents]
    blocked = [b for b in blocked if b]
    if not blocked:
        raise InvalidRequestError("no usable text: every document is shorter than min_block_tokens")
    n_questions = round(count * config.question_fraction)
    passages = [b for doc in blocked for b in doc]
    # fact questions draw from their own stream: at fact_fraction 0 the rest is what it was
    pairs = list(logged) + list(islice(fact_questions(seed), round(n_questions * config.fact_fraction)))
    while len(pairs) < 2 * n_questions:  # spare pairs: prompts over the token budget are skipped
        fresh = list(templated_questions(passages, rng, config.cloze_fraction))
        if not fresh:
            break
        pairs.extend(fresh)
    examples: list[Example] = []
    for example in question_examples(pairs, template, teacher_answers, config.max_example_tokens,
                                     min(batch_size, max(1, n_questions))):
        examples.append(example)
        if progress:
            progress(len(examples), count)
        if len(examples) == n_questions:
            break
    continuations: list[Example] = []
    while len(examples) + len(continuations) < count:
        before = len(continuations)
        continuations.extend(continuation_examples(blocked, tokenizer, config, rng))
        if len(continuations) == before:
            break
    examples.extend(continuations[: count - len(examples)])
    if progress:
        progress(len(examples), count)
    rng.shuffle(examples)
    return examples



def documents_in(directory: str | Path) -> list[str]:
    """The text of every .md/.txt/.rst file under `directory`, in path order (InvalidRequestError
    when there is no such directory or it holds none)."""
    return list(read_documents([Path(directory)]).values())
