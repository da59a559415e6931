"""CacheIndex.forget_blocks, on SQLite and PostgreSQL: what a failed write registered goes, and a
block something else uses meanwhile stays (a document lists it, an entry or a write in flight
names it), so a concurrent ingest of the same text keeps its block. abandon_writes drops a failed
write's intents, and only those."""

from __future__ import annotations



from blockrag.kvcache.index import CacheIndex, KVEntry, block_id_for



def test_forgets_only_the_blocks_nothing_uses(index: CacheIndex) -> None:
    texts = {name: f"The {name} block of the harbour guide." for name in
             ("lone", "in_document", "with_entry", "being_written", "other_tenant")}
    ids = {name: block_id_for("t", text) for name, text in texts.items()}
    index.register_blocks("t", [(texts[n], 9) for n in ("lone", "with_entry", "being_written", "other_tenant")])
    index.register_blocks("t", [(texts["in_document"], 9)], "guide", "harbour")
    index.register_blocks("u", [(texts["other_tenant"], 9)])
    index.commit_entries("t", [KVEntry(ids["with_entry"], "m1", "file:///kv/a", 10)])
    index.begin_writes("t", [KVEntry(ids["being_written"], "m1", "file:///kv/b", 10)])

    forgotten = index.forget_blocks("t", list(ids.values()) + ["blk_unknown"])
    assert forgotten == sorted([ids["lone"], ids["other_tenant"]])
    kept = index.get_blocks("t", list(ids.values()))
    assert [b is not None for b in kept] == [False, True, True, True, False]
    assert index.get_blocks("u", [block_id_for("u", texts["other_tenant"])])[0] is not None  # another tenant's
    assert [h.block_id for h in index.search("t", "guide", "harbour", 5)] == [ids["in_document"]]

    # the write fails: its intents go, and then its block too
    index.abandon_writes(["file:///kv/b"])
    assert index.named(["file:///kv/a", "file:///kv/b"]) == {"file:///kv/a"}
    assert index.forget_blocks("t", [ids["being_written"]]) == [ids["being_written"]]
