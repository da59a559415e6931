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


def test_two_ingests_of_the_same_documents_in_opposite_orders_both_land(index: CacheIndex, monkeypatch) -> None:
    """Two clients re-ingest documents a and b with new texts each (so their blocks differ and
    never make one wait for the other), in opposite orders. Each waits, after writing its first
    document, until the other has written its own first one too (or 2 s). Without one lock order
    for every ingest, each then holds the document the other needs next: PostgreSQL detects the
    deadlock and refuses one ingest."""
    import threading

    replace, arrived, both = CacheIndex._replace_document, [0], threading.Event()
    count_lock, local = threading.Lock(), threading.local()

    def first_then_wait(conn, document, block_ids, now):
        replace(conn, document, block_ids, now)
        if not getattr(local, "waited", False):
            local.waited = True
            with count_lock:
                arrived[0] += 1
                if arrived[0] == 2:
                    both.set()
            both.wait(2.0)  # with the lock order the other ingest waits on our lock, never arrives

    monkeypatch.setattr(CacheIndex, "_replace_document", staticmethod(first_then_wait))
    first = [("a", [("Vell's mill grinds rye.", 5)]), ("b", [("Osk's mill grinds oats.", 5)])]
    second = [("b", [("Osk's mill is shut.", 4)]), ("a", [("Vell's mill is shut.", 4)])]
    errors: list[Exception] = []

    def ingest(documents):
        try:
            index.register_documents("t", "mills", documents)
        except Exception as e:  # noqa: BLE001 - the test asserts there is none
            errors.append(e)

    threads = [threading.Thread(target=ingest, args=(docs,)) for docs in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    texts = sorted(b.text for b in index.list_collection("t", "mills"))
    assert texts in (["Osk's mill grinds oats.", "Vell's mill grinds rye."], ["Osk's mill is shut.", "Vell's mill is shut."])
