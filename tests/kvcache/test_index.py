"""CacheIndex against real databases: a SQLite file and the PostgreSQL server, same suite."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from blockrag.errors import CacheIndexError, InvalidRequestError, StorageConfigError
from blockrag.kvcache import migrations
from blockrag.kvcache.index import (
    CacheIndex,
    IndexStats,
    KVEntry,
    LookupRow,
    StoredBlock,
    VersionStats,
    block_id_for,
)
from blockrag.kvcache.index_engine import IndexConfig, create_index_engine
from blockrag.kvcache.index_schema import metadata
from blockrag.kvcache.index_search import SEARCH_OBJECTS
from fixtures.index_db import Clock
from fixtures.postgres import fresh_database

ITERATIONS = 15  # per thread; raise it to stress the locking


def run(url: str, statement: str) -> list[sa.Row]:
    engine = create_index_engine(IndexConfig(url))
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement))
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def hits(url: str) -> dict[tuple[str, str], int]:
    rows = run(url, "SELECT block_id, model_version, hits FROM kv_entries")
    return {(b, v): n for b, v, n in rows}


def entry(block_id: str, version: str = "m1", nbytes: int = 10) -> KVEntry:
    return KVEntry(block_id, version, f"file:///kv/{block_id}@{version}", nbytes)


# -- block ids -------------------------------------------------------------------------------


def test_block_ids_are_stable() -> None:
    # Pinned: ids name objects in shared stores, so they must never change.
    assert block_id_for("default", "hello") == "blk_e20959cec7d01949f94ae2a0229c448e"
    assert block_id_for("", "hello") == block_id_for("default", "hello")
    assert block_id_for("t1", "hello") != block_id_for("t2", "hello")
    # NUL separates tenant from text in the digest, so neither may contain one.
    for tenant, text in (("a", "b\0c"), ("a\0b", "c")):
        with pytest.raises(InvalidRequestError, match="NUL"):
            block_id_for(tenant, text)


def test_register_returns_ids_in_order(index: CacheIndex) -> None:
    ids = index.register_blocks("t", [("alpha", 1), ("beta", 2), ("alpha", 1)])
    assert ids == [block_id_for("t", "alpha"), block_id_for("t", "beta"), ids[0]]
    assert index.get_blocks("t", [ids[1], "blk_unknown", ids[0]]) == [
        StoredBlock(ids[1], "beta", 2), None, StoredBlock(ids[0], "alpha", 1)
    ]


def test_register_is_an_upsert(index: CacheIndex) -> None:
    (first,) = index.register_blocks("t", [("alpha", 1)])
    (again,) = index.register_blocks("t", [("alpha", 3)])
    assert first == again
    assert index.get_blocks("t", [first]) == [StoredBlock(first, "alpha", 3)]
    assert index.stats("t").blocks == 1


def test_tenants_are_separate(index: CacheIndex) -> None:
    (a,) = index.register_blocks("", [("shared text", 1)])
    (b,) = index.register_blocks("other", [("shared text", 1)])
    assert a != b
    assert index.get_blocks("default", [a, b]) == [StoredBlock(a, "shared text", 1), None]
    assert index.stats("").blocks == index.stats("other").blocks == 1
    assert index.stats().blocks == 2


# -- documents and collections ---------------------------------------------------------------


def test_documents_in_ingest_order(index: CacheIndex) -> None:
    index.register_blocks("t", [("z1", 1), ("z2", 1)], "c", "doc-z")
    index.register_blocks("t", [("a1", 1)], "c", "doc-a")
    index.register_blocks("t", [("other", 1)], "b-coll", "doc")
    assert [b.text for b in index.list_collection("t", "c")] == ["z1", "z2", "a1"]
    assert index.collections("t") == ["c", "b-coll"]
    assert index.collections("nobody") == [] and index.list_collection("t", "none") == []


def test_reregistering_a_document_replaces_its_blocks(index: CacheIndex) -> None:
    index.register_blocks("t", [("one", 1), ("two", 1), ("three", 1)], "c", "d1")
    index.register_blocks("t", [("last", 1)], "c", "d2")
    index.register_blocks("t", [("two", 1), ("new", 1)], "c", "d1")
    # d1 keeps its place before d2; its old blocks stay registered, only unlisted.
    assert [b.text for b in index.list_collection("t", "c")] == ["two", "new", "last"]
    assert index.stats("t") == IndexStats(
        blocks=5, documents=2, collections=1, entries=0, bytes=0, by_model_version=()
    )
    index.register_blocks("t", [], "c", "d1")
    assert [b.text for b in index.list_collection("t", "c")] == ["last"]


def test_document_may_repeat_a_block(index: CacheIndex) -> None:
    index.register_blocks("t", [("x", 1), ("y", 1), ("x", 1)], "c", "d")
    assert [b.text for b in index.list_collection("t", "c")] == ["x", "y", "x"]


@pytest.mark.parametrize(
    ("blocks", "collection", "document_id", "match"),
    [
        ([("", 1)], None, None, "non-empty"),
        ([("a\0b", 1)], None, None, "NUL"),
        ([("text", 0)], None, None, "token_count"),
        ([("text", True)], None, None, "token_count"),
        (["text"], None, None, "pair"),
        ([("text", 1)], "c", None, "together"),
        ([("text", 1)], None, "d", "together"),
        ([("text", 1)], "", "d", "collection"),
        ([("text", 1)], "c", "x" * 256, "document_id"),
    ],
)
def test_register_rejects_bad_input(
    index: CacheIndex, blocks: list, collection: str | None, document_id: str | None, match: str
) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        index.register_blocks("t", blocks, collection, document_id)
    assert index.stats().blocks == 0  # nothing half-written


# -- lookup and entries ----------------------------------------------------------------------


def test_lookup_hit_miss_unknown(index: CacheIndex, url: str) -> None:
    a, b = index.register_blocks("t", [("a", 3), ("b", 4)])
    index.commit_entries("t", [entry(a, "m1", 100)])
    rows = index.lookup("t", [a, b, "blk_nope"], "m1")
    assert rows == [
        LookupRow(a, known=True, hit=True, location=entry(a).location, nbytes=100, token_count=3),
        LookupRow(b, known=True, hit=False, location="", nbytes=0, token_count=4),
        LookupRow("blk_nope", known=False, hit=False, location="", nbytes=0, token_count=0),
    ]
    # Another model version, or another tenant, does not see the entry.
    assert not index.lookup("t", [a], "m2")[0].hit
    assert not index.lookup("u", [a], "m1")[0].known
    assert index.lookup("t", [], "m1") == []


def test_lookup_is_a_read_and_hits_are_recorded_in_batches(index: CacheIndex, url: str, clock: Clock) -> None:
    a, b = index.register_blocks("t", [("a", 1), ("b", 1)])
    index.commit_entries("t", [entry(a), entry(b)])
    index.lookup("t", [a, b], "m1")
    assert hits(url) == {(a, "m1"): 0, (b, "m1"): 0}  # no write on the request path
    clock.tick()
    index.record_hits("t", "m1", {a: 2, b: 1})
    index.record_hits("t", "m2", {a: 5})  # no m2 entry: nothing to count
    index.record_hits("u", "m1", {a: 5})  # nor for another tenant
    index.record_hits("t", "m1", {a: 0, "blk_gone": 3})  # an evicted entry is skipped
    assert hits(url) == {(a, "m1"): 2, (b, "m1"): 1}
    # a late batch never moves an entry's last access back in time
    index.record_hits("t", "m1", {b: 1}, at=clock.now - 100)
    rows = run(url, "SELECT block_id, last_access_at FROM kv_entries")
    assert {r[0]: r[1] for r in rows} == {a: clock.now, b: clock.now}
    with pytest.raises(InvalidRequestError, match="hit counts"):
        index.record_hits("t", "m1", {a: -1})


def test_hottest_blocks_of_a_version_most_hits_then_most_recent(index: CacheIndex, clock: Clock) -> None:
    a, b, c, d = index.register_blocks("t", [("alpha", 1), ("beta", 2), ("gamma", 3), ("delta", 4)])
    index.commit_entries("t", [entry(a), entry(b), entry(c), entry(d, "m2")])
    (other,) = index.register_blocks("u", [("alpha", 1)])
    index.commit_entries("u", [entry(other)])
    for ids in ([a, b], [b], [c]):  # b: 2 hits; a and c: 1 each, c the more recent
        clock.tick()
        index.record_hits("t", "m1", dict.fromkeys(ids, 1))
    index.record_hits("t", "m2", {d: 5})  # another version's hits do not count for m1
    index.record_hits("u", "m1", {other: 5})  # nor another tenant's
    hottest = index.hottest_blocks("t", "m1", 3)
    assert [blk.block_id for blk in hottest] == [b, c, a]
    assert hottest[0] == StoredBlock(b, "beta", 2)
    assert [blk.block_id for blk in index.hottest_blocks("t", "m1", 1)] == [b]
    assert index.hottest_blocks("t", "m1", 0) == [] and index.hottest_blocks("t", "m3", 5) == []


def test_commit_replaces_and_keeps_hits(index: CacheIndex, url: str) -> None:
    (a,) = index.register_blocks("t", [("a", 1)])
    index.commit_entries("t", [entry(a, nbytes=10)])
    index.record_hits("t", "m1", {a: 2})
    moved = KVEntry(a, "m1", "s3://bucket/kv/a", 12)
    index.commit_entries("t", [moved, entry(a, "m2", 5)])
    assert index.lookup("t", [a], "m1")[0].location == "s3://bucket/kv/a"
    assert hits(url) == {(a, "m1"): 2, (a, "m2"): 0}
    assert index.stats("t") == IndexStats(
        blocks=1, documents=0, collections=0, entries=2, bytes=17,
        by_model_version=(VersionStats("m1", 1, 12), VersionStats("m2", 1, 5)),
    )


def test_commit_refuses_unregistered_blocks(index: CacheIndex) -> None:
    (a,) = index.register_blocks("t", [("a", 1)])
    with pytest.raises(InvalidRequestError, match="register_blocks"):
        index.commit_entries("t", [entry(a), entry("blk_unregistered")])
    assert index.stats().entries == 0  # all or nothing
    with pytest.raises(InvalidRequestError, match="nbytes"):
        index.commit_entries("t", [KVEntry(a, "m1", "loc", -1)])
    with pytest.raises(InvalidRequestError, match="location"):
        index.commit_entries("t", [KVEntry(a, "m1", "", 1)])


def test_stats_across_tenants(index: CacheIndex) -> None:
    for tenant in ("t", "u"):
        a, b = index.register_blocks(tenant, [("a", 1), ("b", 1)], "c", "d")
        index.commit_entries(tenant, [entry(a, "m1", 10), entry(b, "m2", 20)])
    index.register_blocks("u", [("c", 1)], "c2", "d")
    assert index.stats() == IndexStats(
        blocks=5, documents=3, collections=3, entries=4, bytes=60,
        by_model_version=(VersionStats("m1", 2, 20), VersionStats("m2", 2, 40)),
    )
    assert index.stats("u").collections == 2 and index.stats("t").bytes == 30


# -- eviction --------------------------------------------------------------------------------


def test_evict_by_block_ids(index: CacheIndex) -> None:
    a, b, c = index.register_blocks("t", [("a", 1), ("b", 1), ("c", 1)])
    index.commit_entries("t", [entry(a, "m1"), entry(a, "m2"), entry(b, "m1"), entry(c, "m1")])
    assert index.evict("t", [a, "blk_nope"]) == [entry(a, "m1"), entry(a, "m2")]
    assert index.evict("t", [b, c], model_version="m2") == []
    assert index.evict("t", [b], model_version="m1") == [entry(b, "m1")]
    assert [r.hit for r in index.lookup("t", [a, b, c], "m1")] == [False, False, True]


def test_evict_model_version(index: CacheIndex) -> None:
    a, b = index.register_blocks("t", [("a", 1), ("b", 1)])
    index.commit_entries("t", [entry(a, "old"), entry(b, "old"), entry(a, "new")])
    index.commit_entries("u", [])  # nothing to commit is fine
    assert index.evict("t", model_version="old") == [entry(a, "old"), entry(b, "old")]
    assert index.stats("t").by_model_version == (VersionStats("new", 1, 10),)


def test_evict_lru_until_max_bytes(index: CacheIndex, clock: Clock) -> None:
    a, b, c, d = index.register_blocks("t", [("a", 1), ("b", 1), ("c", 1), ("d", 1)])
    (other,) = index.register_blocks("u", [("a", 1)])
    for block_id in (a, b, c, d):  # committed in this order, one second apart
        index.commit_entries("t", [entry(block_id, nbytes=100)])
        clock.tick()
    index.commit_entries("u", [entry(other, nbytes=1000)])
    clock.tick()
    index.record_hits("t", "m1", {a: 1})  # a becomes the most recently used
    # 400 bytes, keep at most 250: drop b then c (the oldest); a and d stay.
    assert index.evict("t", max_bytes=250) == [entry(b, nbytes=100), entry(c, nbytes=100)]
    assert index.stats("t").bytes == 200
    assert index.evict("t", max_bytes=200) == []  # already within budget
    assert index.stats("u").bytes == 1000  # other tenants untouched
    assert index.evict("t", max_bytes=1) == [entry(d, nbytes=100), entry(a, nbytes=100)]


def test_evict_lru_ties_break_by_key(index: CacheIndex) -> None:
    ids = index.register_blocks("t", [(f"block {i}", 1) for i in range(5)])
    index.commit_entries("t", [entry(i) for i in ids])  # all at the same instant
    evicted = index.evict("t", max_bytes=25)
    assert [e.block_id for e in evicted] == sorted(ids)[:3]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"max_bytes": 10, "block_ids": ["blk_x"]},
        {"max_bytes": 10, "model_version": "m1"},
        {"max_bytes": -1},
        {"block_ids": "blk_x"},
    ],
)
def test_evict_needs_exactly_one_selector(index: CacheIndex, kwargs: dict) -> None:
    with pytest.raises(InvalidRequestError):
        index.evict("t", **kwargs)


# -- concurrency, migrations, failures --------------------------------------------------------


def test_concurrent_threads_and_connections(url: str, index: CacheIndex) -> None:
    # Two threads, one on the shared index and one on its own engine (as another process
    # would be), write and read overlapping blocks.
    second = CacheIndex.open(url)
    errors: list[BaseException] = []

    def work(ix: CacheIndex, worker: int) -> None:
        try:
            for i in range(ITERATIONS):
                texts = [(f"shared {i}", 1), (f"own {worker} {i}", 2)]
                ids = ix.register_blocks("t", texts, "c", f"doc-{worker}")
                ix.commit_entries("t", [entry(b, f"m{worker}") for b in ids])
                assert all(r.hit for r in ix.lookup("t", ids, f"m{worker}"))
                ix.evict("t", [ids[1]])
        except BaseException as e:  # re-raised below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(ix, n)) for n, ix in enumerate((index, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    second.close()
    assert not errors, errors
    stats = index.stats("t")
    assert (stats.blocks, stats.documents, stats.entries) == (3 * ITERATIONS, 2, 2 * ITERATIONS)


def test_migrate_is_idempotent_and_keeps_data(url: str, index: CacheIndex) -> None:
    (a,) = index.register_blocks("t", [("a", 1)])
    index.migrate()
    index.migrate()
    with CacheIndex.open(url) as reopened:
        assert reopened.get_blocks("t", [a]) == [StoredBlock(a, "a", 1)]
    engine = create_index_engine(IndexConfig(url))
    assert migrations.current_revision(engine) == "0007"
    engine.dispose()


def test_migrate_a_fresh_postgres_database() -> None:
    with fresh_database() as url:
        engine = create_index_engine(IndexConfig(url))
        assert migrations.current_revision(engine) is None
        with CacheIndex.open(url) as index:
            index.migrate()
        assert migrations.current_revision(engine) == "0007"
        engine.dispose()


def test_schema_module_matches_migrations(url: str, index: CacheIndex) -> None:
    engine = create_index_engine(IndexConfig(url))
    with engine.connect() as conn:
        # The full-text index differs by backend (an FTS5 table and its shadow tables, a
        # tsvector column): index_search and its own tests own it, the schema module does not.
        def described(name, kind, parent):
            return name not in SEARCH_OBJECTS and not (kind == "table" and
                                                       name.startswith("block_search_"))

        context = MigrationContext.configure(
            conn, opts={"version_table": migrations.VERSION_TABLE, "include_name": described}
        )
        assert compare_metadata(context, metadata) == []
    engine.dispose()


def test_sqlite_is_shared_safely(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sub/dir/index.db"  # parent directories are created
    with CacheIndex.open(url) as index:
        index.register_blocks("t", [("a", 1)])
    pragmas = run(url, "PRAGMA journal_mode")
    assert pragmas[0][0] == "wal"
    assert run(url, "PRAGMA busy_timeout")[0][0] == 30_000


def test_database_newer_than_this_build(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/index.db"
    CacheIndex.open(url).close()
    run(url, f"UPDATE {migrations.VERSION_TABLE} SET version_num = '9999'")
    with pytest.raises(CacheIndexError, match="newer blockrag"):
        CacheIndex.open(url)


@pytest.mark.parametrize(
    "bad_url",
    ["not a url", "mysql://u@h/db", "sqlite://", "sqlite:///:memory:"],
)
def test_unusable_urls(bad_url: str) -> None:
    with pytest.raises(StorageConfigError):
        CacheIndex.open(bad_url)


def test_unreachable_database() -> None:
    with pytest.raises(CacheIndexError, match="127.0.0.1:1/nodb") as info:
        CacheIndex.open("postgresql+psycopg://postgres:hunter2@127.0.0.1:1/nodb")
    assert "hunter2" not in str(info.value)  # messages end up in logs
