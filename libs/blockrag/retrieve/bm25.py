"""BM25 over block texts: the built-in retriever for questions asked against a collection.

Lexical and in-memory: enough for collections of thousands of blocks and for tests; a vector
retriever in front of Generate (explicit block ids) is the way for larger corpora.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"\w+", re.UNICODE)


def _terms(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def top_k_bm25(question: str, texts: Sequence[str], k: int, k1: float = 1.5, b: float = 0.75) -> list[int]:
    """Indices of the k best-matching texts, returned in their original order (document order
    reads better to the model than score order). Ties keep the earlier text; texts sharing no
    term with the question are never chosen, unless none does (then the first k)."""
    docs = [Counter(_terms(t)) for t in texts]
    if not docs or k <= 0:
        return []
    avg_len = sum(sum(d.values()) for d in docs) / len(docs) or 1.0
    query = set(_terms(question))
    df = {term: sum(1 for d in docs if term in d) for term in query}
    scores = []
    for d in docs:
        length = sum(d.values())
        score = 0.0
        for term in query:
            tf = d.get(term, 0)
            if tf:
                idf = math.log(1 + (len(docs) - df[term] + 0.5) / (df[term] + 0.5))
                score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg_len))
        scores.append(score)
    ranked = sorted((i for i in range(len(docs)) if scores[i] > 0), key=lambda i: (-scores[i], i))[:k]
    return sorted(ranked) if ranked else list(range(min(k, len(docs))))
