"""top_k_bm25: which blocks a question picks, and in which order they come back."""

from __future__ import annotations

import pytest

from blockrag.retrieve.bm25 import top_k_bm25

CORPUS = [
    "the cat sat on the mat",  # 0: 6 terms
    "dogs chase cats",  # 1: "cats" is not "cat" (no stemming)
    "the lighthouse guides ships",  # 2: 4 terms
    "a cat and a dog",  # 3: 5 terms
    "ships sail at night",  # 4: 4 terms
]


@pytest.mark.parametrize(("question", "k", "chosen"), [
    # "cat" and "ships" have the same document frequency: shorter documents score higher
    ("cat ships", 1, [2]),  # 2 and 4 tie (same length): the earlier wins
    ("cat ships", 2, [2, 4]),
    ("cat ships", 3, [2, 3, 4]),
    # the rare term outweighs the common one
    ("the lighthouse", 1, [2]),
    ("the lighthouse", 2, [0, 2]),
    # a document with both terms beats one with either
    ("ships at night", 1, [4]),
    # case and punctuation do not matter
    ("CAT?!", 1, [3]),
    ("Dogs, cats.", 1, [1]),
])
def test_chosen_indices(question, k, chosen):
    assert top_k_bm25(question, CORPUS, k) == chosen


def test_results_come_back_in_document_order():
    # 4 scores higher than 2, yet 2 comes first
    assert top_k_bm25("ships night", CORPUS, 1) == [4]
    assert top_k_bm25("ships night", CORPUS, 2) == [2, 4]


def test_texts_without_a_shared_term_are_never_chosen():
    assert top_k_bm25("cat", CORPUS, 5) == [0, 3]
    assert top_k_bm25("cat ships", CORPUS, 10) == [0, 2, 3, 4]


def test_no_shared_term_gives_the_first_k():
    assert top_k_bm25("zebra", CORPUS, 2) == [0, 1]
    assert top_k_bm25("zebra", CORPUS, 10) == [0, 1, 2, 3, 4]
    assert top_k_bm25("", CORPUS, 3) == [0, 1, 2]


def test_unicode_terms():
    texts = ["Zürich is in Switzerland", "Zurich airport", "東京 is Tokyo"]
    assert top_k_bm25("zürich", texts, 1) == [0]
    assert top_k_bm25("東京", texts, 1) == [2]


@pytest.mark.parametrize("k", [0, -1])
def test_k_not_positive_gives_nothing(k):
    assert top_k_bm25("cat", CORPUS, k) == []


def test_empty_corpus_gives_nothing():
    assert top_k_bm25("cat", [], 3) == []
