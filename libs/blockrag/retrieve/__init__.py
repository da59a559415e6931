"""Retrieval of context blocks for a question."""

from blockrag.retrieve.bm25 import top_k_bm25

__all__ = ["top_k_bm25"]
