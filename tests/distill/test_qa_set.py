"""Synthetic RAG QA set: determinism, shape, answer placement, held-out names, scoring."""

from __future__ import annotations

import calendar
import re
from collections import Counter

import pytest

from blockrag.distill.qa_set import SPLITS, QAItem, build_qa_set, is_correct

N = 300


def _words(text: str) -> str:
    # an independent normaliser, so a bug in the module's own matching cannot hide here
    return " " + " ".join(re.findall(r"[a-z0-9]+", text.lower())) + " "


def _contains(text: str, phrase: str) -> bool:
    return _words(phrase) in _words(text)


@pytest.fixture(scope="module")
def sets() -> dict[str, list[QAItem]]:
    return {split: build_qa_set(N, seed=0, split=split) for split in SPLITS}


def test_same_arguments_give_equal_lists() -> None:
    assert build_qa_set(40, seed=3, split="dev") == build_qa_set(40, seed=3, split="dev")


def test_seed_and_split_change_the_items() -> None:
    base = build_qa_set(20, seed=0, split="dev")
    assert build_qa_set(20, seed=1, split="dev") != base
    assert [i.question for i in build_qa_set(20, seed=0, split="heldout")] != [i.question for i in base]


def test_n_and_split_respected(sets: dict[str, list[QAItem]]) -> None:
    assert len(build_qa_set(1, split="dev")) == 1
    for split, items in sets.items():
        assert len(items) == N
        assert [i.id for i in items] == [f"{split}-{k:04d}" for k in range(N)]


def test_default_split_is_heldout() -> None:
    assert build_qa_set(3) == build_qa_set(3, seed=0, split="heldout")


def test_five_passages_answer_only_in_its_passage(sets: dict[str, list[QAItem]]) -> None:
    for item in sets["heldout"] + sets["dev"]:
        assert len(item.passages) == 5 and 0 <= item.answer_passage < 5
        assert _contains(item.passages[item.answer_passage], item.answers[0]), item
        for k, passage in enumerate(item.passages):
            if k != item.answer_passage:
                assert not any(_contains(passage, a) for a in item.answers), (item.id, k)


def test_distractors_are_in_other_passages_and_never_the_answer(sets: dict[str, list[QAItem]]) -> None:
    with_distractors = 0
    for item in sets["heldout"]:
        others = [p for k, p in enumerate(item.passages) if k != item.answer_passage]
        for d in item.distractor_answers:
            # a substring: "kettle" is accepted as a form of "kettles" without being written
            assert any(d.lower() in p.lower() for p in others), (item.id, d)
            assert not any(_contains(a, d) or _contains(d, a) for a in item.answers), (item.id, d)
        # at least two distractor passages of the same kind offer a competing value
        with_distractors += len({p for p in others for d in item.distractor_answers if _contains(p, d)}) >= 2
    assert with_distractors == N


def test_passages_are_a_few_sentences_of_moderate_length(sets: dict[str, list[QAItem]]) -> None:
    for item in sets["heldout"][:100]:
        for passage in item.passages:
            assert 40 <= len(passage.split()) <= 120, passage
            assert 2 <= len(re.findall(r"[.!?](?:\s|$)", passage)) <= 4, passage


def test_answer_sentence_is_not_always_first(sets: dict[str, list[QAItem]]) -> None:
    first = sum(_contains(re.split(r"(?<=\.)\s", i.passages[i.answer_passage])[0], i.answers[0])
                for i in sets["heldout"])
    assert first < 0.7 * N


def test_answer_position_is_spread(sets: dict[str, list[QAItem]]) -> None:
    counts = Counter(i.answer_passage for i in sets["heldout"])
    assert set(counts) == set(range(5))
    assert min(counts.values()) >= N // 10


def test_entity_names_distinct_within_an_item(sets: dict[str, list[QAItem]]) -> None:
    for item in sets["heldout"]:
        assert len(item.entities) == 5 and len(set(item.entities)) == 5, item.entities
        assert _contains(item.passages[item.answer_passage], item.entities[item.answer_passage])


def _names(items: list[QAItem]) -> set[str]:
    """Entity names and the generated names among the answers (people, towns, rivers)."""
    months = set(calendar.month_name)
    names = {e for i in items for e in i.entities}
    names |= {a for i in items for a in i.answers + i.distractor_answers
              if a[:1].isupper() and a not in months}
    return names


def test_dev_and_heldout_names_are_disjoint(sets: dict[str, list[QAItem]]) -> None:
    dev, heldout = _names(sets["dev"]), _names(sets["heldout"])
    assert len(dev) > 1000 and len(heldout) > 1000
    assert not dev & heldout


def test_at_least_eight_templates_used(sets: dict[str, list[QAItem]]) -> None:
    for items in sets.values():
        assert len({i.template for i in items}) >= 8


def test_no_duplicate_items(sets: dict[str, list[QAItem]]) -> None:
    for items in sets.values():
        keys = [(i.question, i.passages[i.answer_passage]) for i in items]
        assert len(set(keys)) == len(keys)
        assert len({i.question for i in items}) == len(items)


def _item(answers: tuple[str, ...], distractors: tuple[str, ...]) -> QAItem:
    return QAItem(id="test-0000", question="?", passages=("",) * 5, answer_passage=0,
                  answers=answers, distractor_answers=distractors, template="t")


PERSON = _item(("Anselm Kovar", "Kovar"), ("Ilse Drell", "Drell", "Tomas Benwick", "Benwick"))
YEAR = _item(("1843",), ("1790", "1902"))
DISH = _item(("roast chestnuts", "chestnuts"), ("smoked eel", "eel"))


@pytest.mark.parametrize(("generated", "item", "expected"), [
    ("Anselm Kovar", PERSON, True),
    ("The town was founded by Anselm Kovar, a former miller.", PERSON, True),
    ("Kovar founded it.", PERSON, True),
    ("ANSELM   KOVAR!", PERSON, True),
    ("anselm-kovar", PERSON, True),
    ("It was Ilse Drell.", PERSON, False),
    ("Anselm Kovar or Ilse Drell.", PERSON, False),
    ("Kovar and Drell", PERSON, False),
    ("Kovarsson founded it.", PERSON, False),
    ("", PERSON, False),
    ("1843", YEAR, True),
    ("It was founded in 1843.", YEAR, True),
    ("In 1843, and rebuilt in 1902.", YEAR, False),
    ("18430", YEAR, False),
    ("in 21843", YEAR, False),
    ("1843s", YEAR, False),
    ("Its dish is roast chestnuts.", DISH, True),
    ("Chestnuts, roasted.", DISH, True),
    ("smoked eel", DISH, False),
    ("roast chestnuts and smoked eel", DISH, False),
])
def test_is_correct(generated: str, item: QAItem, expected: bool) -> None:
    assert is_correct(generated, item) is expected


def test_is_correct_on_built_items(sets: dict[str, list[QAItem]]) -> None:
    for item in sets["dev"][:50]:
        assert is_correct(f"The answer is {item.answers[0]}.", item)
        assert not is_correct(" ".join(item.answers + item.distractor_answers), item)
        for d in item.distractor_answers:
            assert not is_correct(d, item)


@pytest.mark.parametrize("split", ["test", "", "Dev", "train"])
def test_unknown_split_raises(split: str) -> None:
    with pytest.raises(ValueError, match="split"):
        build_qa_set(5, split=split)


@pytest.mark.parametrize("n", [0, -1])
def test_bad_n_raises(n: int) -> None:
    with pytest.raises(ValueError, match="n must be"):
        build_qa_set(n, split="dev")
