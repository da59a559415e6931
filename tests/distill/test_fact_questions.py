"""Fact questions (distill/facts.py): factual questions over invented entities, kept apart from
the fidelity set that measures the adapters."""

from __future__ import annotations

import re
from itertools import islice

import pytest

from blockrag.distill.data import DataConfig, mixed_examples
from blockrag.distill.facts import fact_questions
from blockrag.distill.qa_set import build_qa_set
from blockrag.models import load_tokenizer
from blockrag.prompt import PromptTemplate

from test_training_data import DOCUMENT


def _mentions(passage: str, name: str) -> bool:
    return re.search(rf"(?<![\w\"]){re.escape(name)}(?![\w])", passage, re.IGNORECASE) is not None


def test_each_question_is_about_an_entity_exactly_one_passage_describes():
    pairs = list(islice(fact_questions(0), 300))
    assert len({q for _, q in pairs}) > 290  # not one question over and over
    positions = set()
    for passages, question in pairs:
        assert 3 <= len(passages) <= 6
        named = [n for n in re.findall(r'"[^"]+"|Mount \w+|[Tt]he \w+ (?:Bridge|Inn)|[A-Z][a-z]+ [A-Z][a-z]+|\b[a-z]+(?:lib|kit|db|js|io)\b',
                                       question) if n not in ("What", "Who")]
        assert named, question
        holders = [i for i, p in enumerate(passages) if _mentions(p, named[-1])]
        assert len(holders) == 1, (question, named)
        positions.add(holders[0])
    assert positions == set(range(6))  # the answer's passage is anywhere, the first included


def test_the_stream_is_fixed_by_its_seed():
    assert list(islice(fact_questions(3), 20)) == list(islice(fact_questions(3), 20))
    assert list(islice(fact_questions(3), 20)) != list(islice(fact_questions(4), 20))


def test_no_name_of_the_held_out_fidelity_set_appears():
    held_out = build_qa_set(300, split="heldout")
    names = {n.lower() for item in held_out for n in item.entities}
    names |= {a.lower() for item in held_out for a in item.answers + item.distractor_answers if a[:1].isupper()}
    words = {w.lower() for passages, question in islice(fact_questions(0), 2000)
             for w in re.findall(r"[A-Za-z]+", " ".join(passages) + " " + question)}
    surnames = {n.split()[-1] for n in names}
    assert len(surnames) > 300
    assert not surnames & words
    assert not {q.question for q in held_out} & {q for _, q in islice(fact_questions(0), 2000)}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def test_fact_fraction_is_the_share_of_question_examples(tokenizer):
    template = PromptTemplate(tokenizer)
    config = DataConfig(question_fraction=0.8, fact_fraction=0.5)
    asked = []
    examples = mixed_examples([DOCUMENT], tokenizer, template, lambda ps: asked.extend(ps) or [[7]] * len(ps),
                              config, count=10, seed=0)
    assert len(examples) == 10
    prompts = [tokenizer.decode(p) for p in asked]
    facts = [p for p in prompts if "Quill" not in p]  # DOCUMENT's passages all name a river Quill
    assert len(asked) == 8 and len(facts) == 4
    # without facts the templated questions are what they were (older examples files still match)
    plain = []
    mixed_examples([DOCUMENT], tokenizer, template, lambda ps: plain.extend(ps) or [[7]] * len(ps),
                   DataConfig(question_fraction=0.8, fact_fraction=0.0), count=10, seed=0)
    assert [p for p in asked if "Quill" in tokenizer.decode(p)] == plain[:4]
