"""CacheIndex.register_documents, on SQLite and PostgreSQL: N documents in one call record what N
register_blocks calls with a document record (ids, collection order, replacement), all or none."""

from __future__ import annotations


import pytest

from blockrag.errors import InvalidRequestError
from blockrag.kvcache.index import CacheIndex, IndexStats, block_id_for

DOCUMENTS = [
    ("d1", [("Tolvik's harbour opens at seven.", 7), ("Its ferry leaves at nine.", 6)]),
    ("d2", [("Orsa has no harbour.", 5)]),
    ("d3", [("Its ferry leaves at nine.", 6), ("Brennholt's harbour opens at eight.", 7)]),  # a block of d1 again
]


def test_one_call_records_what_one_call_per_document_does(index: CacheIndex) -> None:
    ids = index.register_documents("t", "port", DOCUMENTS)
    assert ids == [[block_id_for("t", text) for text, _ in blocks] for _, blocks in DOCUMENTS]
    assert ids[0][1] == ids[2][0]  # one block, listed by two documents
    assert [b.text for b in index.list_collection("t", "port")] == [
        "Tolvik's harbour opens at seven.", "Its ferry leaves at nine.", "Orsa has no harbour.",
        "Its ferry leaves at nine.", "Brennholt's harbour opens at eight."]
    assert index.stats("t") == IndexStats(blocks=4, documents=3, collections=1, entries=0, bytes=0,
                                          by_model_version=())
    # the same as one register_blocks per document, into another collection
    singles = [index.register_blocks("t", blocks, "port-2", d) for d, blocks in DOCUMENTS]
    assert singles == ids
    assert [b.block_id for b in index.list_collection("t", "port-2")] == \
        [b.block_id for b in index.list_collection("t", "port")]


def test_a_document_registered_again_is_replaced_in_its_place(index: CacheIndex) -> None:
    index.register_documents("t", "port", DOCUMENTS)
    index.register_documents("t", "port", [("d1", [("Tolvik's harbour is closed.", 5)]), ("d4", [("New.", 1)])])
    assert [b.text for b in index.list_collection("t", "port")] == [
        "Tolvik's harbour is closed.", "Orsa has no harbour.", "Its ferry leaves at nine.",
        "Brennholt's harbour opens at eight.", "New."]
    assert index.register_documents("t", "port", []) == []
    assert index.stats("t").documents == 4


@pytest.mark.parametrize(("documents", "message"), [
    ([("d1", [("a", 1)]), ("d1", [("b", 1)])], "document 'd1' is given twice"),
    ([("d1", [("a", 1)]), ("d2", [("b", 0)])], "token_count of block 0 must be an int >= 1"),
    ([("d1", [("a", 1)]), ("", [("b", 1)])], "document_id of document 1 must be a non-empty string"),
])
def test_a_bad_document_records_none_of_them(index: CacheIndex, documents, message) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        index.register_documents("t", "port", documents)
    assert index.stats("t").blocks == 0 and index.list_collection("t", "port") == []
