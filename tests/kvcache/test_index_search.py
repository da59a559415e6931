"""CacheIndex.search against real databases (a SQLite file with FTS5, the PostgreSQL server with
its tsvector column): exact rankings, isolation of tenants and collections, request checks, and
a database migrated before search existed getting its blocks indexed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from blockrag.errors import InvalidRequestError
from blockrag.kvcache import migrations
from blockrag.kvcache.index import CacheIndex
from blockrag.kvcache.index_engine import IndexConfig, create_index_engine
from blockrag.kvcache.index_search import COUNTED_BLOCKS, MAX_CANDIDATES, MAX_K, MAX_RANKED, search_terms
from fixtures.postgres import fresh_database

TABLES = ("kv_entries", "document_blocks", "documents", "blocks")
CORPUS = [
    "The ferry to Skarvholm leaves twice a day; the crossing takes fifty minutes.",
    "Tolvik exports salted cod. Its harbour master signs every export permit.",
    "The harbour of Tolvik freezes in January, and the ferries stop.",
    "Skarvholm has one school, one church and no harbour.",
    "Cod, cod and more cod: the market sells little else.",
]

# Indices into CORPUS, best first. Both find blocks through any word of the question (an AND
# would keep only one block per question) and through stems ("permits" finds "permit",
# "ferries" finds "ferry"). SQLite's BM25 knows no stop words: "the" and "in" bring blocks 0 and 4
# in at a score of about 0 (every block has "the": no weight), after the real matches, ordered by
# id. PostgreSQL's english configuration drops them; its ts_rank ties (2 and 3 for the ferry
# question, 0, 1 and 3 for "harbour ferries") are ordered by block id.
RANKINGS = {
    "Who signs the export permits in Tolvik?": {"sqlite": [1, 2, 0, 4], "postgres": [1, 2]},
    "When does the ferry leave for Skarvholm?": {"sqlite": [0, 3, 2, 4], "postgres": [0, 3, 2]},
    "cod": {"sqlite": [4, 1], "postgres": [4, 1]},
    "harbour ferries": {"sqlite": [2, 0, 3, 1], "postgres": [2, 1, 0, 3]},
    "zebra": {"sqlite": [], "postgres": []},
}


def backend(url: str) -> str:
    return "postgres" if url.startswith("postgresql") else "sqlite"


@pytest.fixture
def index(url: str) -> Iterator[CacheIndex]:
    index = CacheIndex.open(url)
    if url.startswith("postgresql"):  # the session's database: start each case empty
        with index.engine.begin() as conn:
            conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY"))
    yield index
    index.close()


@pytest.mark.parametrize("question", list(RANKINGS))
def test_exact_rankings(index: CacheIndex, url: str, question: str) -> None:
    ids = index.register_blocks("t", [(text, 9) for text in CORPUS], "port", "d1")
    hits = index.search("t", "port", question, 5)
    assert [ids.index(h.block_id) for h in hits] == RANKINGS[question][backend(url)]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # texts and sizes come along: a caller needs no second read for them
    assert all((h.text, h.token_count) == (CORPUS[ids.index(h.block_id)], 9) for h in hits)


def test_k_keeps_the_best(index: CacheIndex) -> None:
    ids = index.register_blocks("t", [(text, 9) for text in CORPUS], "port", "d1")
    assert [h.block_id for h in index.search("t", "port", "harbour ferries", 1)] == [ids[2]]


def test_a_block_in_two_documents_comes_once(index: CacheIndex) -> None:
    (a,) = index.register_blocks("t", [("cod and ice", 3)], "port", "d1")
    index.register_blocks("t", [("cod and ice", 3), ("more cod", 2)], "port", "d2")
    assert [h.block_id for h in index.search("t", "port", "ice", 5)] == [a]
    # registered again (token count updated, no new row): still one index entry
    index.register_blocks("t", [("cod and ice", 4)])
    assert [(h.block_id, h.token_count) for h in index.search("t", "port", "ice", 5)] == [(a, 4)]


def test_tenants_and_collections_are_isolated(index: CacheIndex) -> None:
    text = "The harbour master of Tolvik signs permits."
    (mine,) = index.register_blocks("acme", [(text, 5)], "port", "d1")
    (theirs,) = index.register_blocks("globex", [(text, 5)], "port", "d1")
    (other,) = index.register_blocks("acme", [("Harbour permits cost ten crowns.", 5)], "fees", "d1")
    index.register_blocks("acme", [("harbour without a collection", 3)])
    assert mine != theirs
    assert [h.block_id for h in index.search("acme", "port", "harbour permits", 10)] == [mine]
    assert [h.block_id for h in index.search("globex", "port", "harbour permits", 10)] == [theirs]
    assert [h.block_id for h in index.search("acme", "fees", "harbour permits", 10)] == [other]
    assert index.search("globex", "fees", "harbour permits", 10) == []
    assert index.search("initech", "port", "harbour permits", 10) == []
    # the same block in two collections of one tenant is found from both
    index.register_blocks("acme", [(text, 5)], "fees", "d2")
    assert {h.block_id for h in index.search("acme", "fees", "Tolvik", 10)} == {mine}


@pytest.mark.parametrize(("query", "k"), [("", 3), ("  \n", 3), ("cod", 0), ("cod", -1),
                                          ("cod", MAX_K + 1), ("cod", True), (None, 3)])
def test_rejects_empty_queries_and_k_out_of_range(index: CacheIndex, query, k) -> None:
    with pytest.raises(InvalidRequestError, match="query is empty|k must be between 1 and 1000"):
        index.search("t", "port", query, k)


@pytest.mark.parametrize("query", ['"cod', "cod*", "NEAR(cod ice)", "text:cod", "cod OR", "?!", "ice & !cod",
                                   "cod' | 'ice", "Drängfjord"])
def test_query_syntax_is_plain_text(index: CacheIndex, query: str) -> None:
    # operators of FTS5 or tsquery in a question are words or nothing, never an error
    ids = index.register_blocks("t", [("cod and ice", 3), ("Drängfjord has no ice", 4)], "port", "d1")
    found = {h.block_id for h in index.search("t", "port", query, 5)}
    assert found <= set(ids)
    if "cod" in query:
        assert ids[0] in found
    if query == "Drängfjord":  # non-ASCII words are words
        assert found == {ids[1]}


def on_fresh_database(which: str, tmp_path: Path, scenario) -> None:
    """Run scenario(url) on a new SQLite file or a new PostgreSQL database."""
    if which == "sqlite":
        scenario(f"sqlite:///{tmp_path}/old.db")
    else:
        with fresh_database() as url:
            scenario(url)


@pytest.mark.parametrize("which", ["sqlite", "postgres"])
def test_migration_indexes_existing_blocks(tmp_path: Path, which: str) -> None:
    def scenario(url: str) -> None:
        engine = create_index_engine(IndexConfig(url))
        try:
            migrations.upgrade(engine, "0002")  # a database from before search
            old = CacheIndex(engine)
            ids = old.register_blocks("t", [(text, 9) for text in CORPUS], "port", "d1")
            assert migrations.current_revision(engine) == "0002"
            old.migrate()
            assert migrations.current_revision(engine) == "0007"
            hits = old.search("t", "port", "cod", 5)
            assert [ids.index(h.block_id) for h in hits] == RANKINGS["cod"][which]
            # and blocks registered after the migration are indexed as they come
            (new,) = old.register_blocks("t", [("Salted cod, cod, cod, cod, cod.", 6)], "port", "d2")
            assert old.search("t", "port", "cod", 1)[0].block_id == new
        finally:
            engine.dispose()

    on_fresh_database(which, tmp_path, scenario)


def test_postgres_selects_candidates_by_the_rarest_words(postgres_url: str) -> None:
    # Once ANALYZE has counted lexemes, a word in most blocks ("harbour") selects none: only the
    # blocks holding the rarest word of the question are ranked, by all its words.
    with CacheIndex.open(postgres_url) as index:
        with index.engine.begin() as conn:
            conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY"))
        texts = [f"Harbour number {i} of the coast." for i in range(200)]
        texts += ["The harbour of Tolvik is deep.", "Tolvik has a bakery."]
        ids = index.register_blocks("t", [(t, 7) for t in texts], "port", "d1")
        question = "Is the harbour of Tolvik deep?"
        before = [h.block_id for h in index.search("t", "port", question, 5)]
        assert before[0] == ids[200] and len(before) == 5  # every word selects: harbours come in
        with index.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE blocks"))
        after = [h.block_id for h in index.search("t", "port", question, 5)]
        assert after == [ids[200], ids[201]]
        # a question of common words alone still finds blocks: its least common word selects
        assert len(index.search("t", "port", "harbour coast", 5)) == 5


# -- the candidate stage: common words select no candidates but still rank -------------------

# A corpus where most words are common: 500 blocks of the same sentence about numbered towns
# (every word but the number in all of them, a product in 50 each), and a few blocks that answer.
PRODUCTS = ("clocks", "lamps", "bells", "ropes", "boats", "maps", "nets", "tiles", "jars", "kites")
FILLER = [f"The town of Number{i} makes {PRODUCTS[i % 10]}, and the harbour of the town is open "
          f"in summer." for i in range(500)]
ANSWERS = [
    "The town of Tolvik makes clocks, and the harbour master of Tolvik signs every permit.",
    "Tolvik has a bakery and a school.",
    "The harbour of Skarvholm freezes in winter; the town makes lamps.",
    "Skarvholm's ferry leaves the harbour twice a day for the town of Tolvik.",
]
QUESTIONS = [
    "Which town makes clocks near the harbour of Tolvik?",
    "Who signs the permits in the harbour of Tolvik?",
    "When does the harbour of Skarvholm freeze in winter?",
    "Does the ferry from Skarvholm go to the town of Tolvik?",
    "What does the town of Number17 make?",
]

# Every block holding any word of the question, scored by the database alone: the search of
# migration 0003, which ranked the whole of that set.
REFERENCE = {
    "sqlite": """SELECT s.block_id FROM block_search s WHERE block_search MATCH :match AND s.tenant = :tenant
                 ORDER BY -bm25(block_search) DESC, s.block_id LIMIT :k""",
    "postgres": """SELECT block_id FROM blocks, CAST(replace(plainto_tsquery('english', :words)::text, ' & ', ' | ') AS tsquery) q
                   WHERE tenant = :tenant AND search_vector @@ q
                   ORDER BY ts_rank(search_vector, q) DESC, block_id LIMIT :k""",
}


def reference(index: CacheIndex, url: str, tenant: str, question: str, k: int) -> list[str]:
    words = search_terms(question, k)
    params = {"tenant": tenant, "k": k, "words": " ".join(words),
              "match": " OR ".join(f'"{w}"' for w in words)}
    with index.engine.connect() as conn:
        return list(conn.execute(sa.text(REFERENCE[backend(url)]), params).scalars())


def analyze(index: CacheIndex) -> None:
    # PostgreSQL's statistics, as autovacuum would keep them (SQLite counts in the index itself)
    with index.engine.begin() as conn:
        conn.execute(sa.text("ANALYZE"))


@pytest.mark.parametrize("question", QUESTIONS)
def test_same_best_blocks_as_ranking_every_match(index: CacheIndex, url: str, question: str) -> None:
    # "the", "town", "harbour" are in more than MAX_CANDIDATES blocks (and past COUNTED_BLOCKS,
    # where SQLite estimates their count): only the blocks of the rarer words are ranked. The best
    # is the database's best among every block matching any word, and the others come in its
    # order. (Fewer than k when fewer hold a rare word; PostgreSQL's ts_rank, without inverse
    # document frequencies, may score a block of common words alone as high as one of a rare
    # word, and rank it first on a tie: such a block is no candidate.)
    index.register_blocks("t", [(text, 20) for text in FILLER + ANSWERS], "port", "d1")
    analyze(index)
    assert len(FILLER) > max(MAX_CANDIDATES, COUNTED_BLOCKS)
    found = [h.block_id for h in index.search("t", "port", question, 3)]
    every = reference(index, url, "t", question, MAX_K)
    assert found and found[0] == every[0]
    assert found == [b for b in every if b in found]


def test_known_answers_with_common_words(index: CacheIndex) -> None:
    ids = index.register_blocks("t", [(text, 20) for text in FILLER + ANSWERS], "port", "d1")
    analyze(index)
    answer = {text: i for i, text in enumerate(FILLER + ANSWERS)}
    best = [index.search("t", "port", q, 1)[0].block_id for q in QUESTIONS]
    assert best == [ids[answer[ANSWERS[0]]], ids[answer[ANSWERS[0]]], ids[answer[ANSWERS[2]]],
                    ids[answer[ANSWERS[3]]], ids[17]]


def test_common_words_alone_select_the_least_common(index: CacheIndex) -> None:
    # No word of the question is rare: its least common words select ("clocks": 50 blocks),
    # not every block holding "the" or "town" (all 500). Another tenant's blocks make "harbour"
    # common in the index as a whole; acme's own are found, and only those.
    ids = index.register_blocks("acme", [(text, 20) for text in FILLER[:300]], "port", "d1")
    (mine,) = index.register_blocks("acme", [("The harbour of acme is deep.", 6)], "docks", "d1")
    index.register_blocks("globex", [(text, 20) for text in FILLER[300:]], "port", "d1")
    analyze(index)
    hits = index.search("acme", "port", "Which town makes clocks?", 100)
    assert {h.block_id for h in hits} == {ids[i] for i in range(0, 300, 10)}
    assert [h.block_id for h in index.search("acme", "docks", "the harbour", 10)] == [mine]
    assert index.search("globex", "docks", "the harbour", 10) == []



def test_a_question_naming_nothing_ranks_at_most_max_ranked_blocks(index: CacheIndex) -> None:
    # Every word of the question is in all 500 blocks: its least common word selects all of
    # them, and only the first MAX_RANKED are ranked (a search costs the same at 500 blocks or
    # 50,000). A question naming a product still finds every block that names it.
    ids = index.register_blocks("t", [(text, 20) for text in FILLER], "port", "d1")
    analyze(index)
    assert len(FILLER) > MAX_RANKED
    hits = index.search("t", "port", "the town harbour in summer", MAX_K)
    assert len(hits) == MAX_RANKED and len({h.block_id for h in hits}) == MAX_RANKED
    assert {h.block_id for h in hits} <= set(ids)
    assert len(index.search("t", "port", "Which town makes lamps?", MAX_K)) == 50
    # words in no block ("which", "has", "a": SQLite keeps them, PostgreSQL drops them as stop
    # words) leave the common ones to select
    assert len(index.search("t", "port", "Which town has a harbour?", MAX_K)) == MAX_RANKED

@pytest.mark.parametrize("which", ["sqlite", "postgres"])
def test_migration_0006_keeps_blocks_and_their_search(tmp_path: Path, which: str) -> None:
    def scenario(url: str) -> None:
        engine = create_index_engine(IndexConfig(url))
        try:
            migrations.upgrade(engine, "0005")
            old = CacheIndex(engine)
            ids = old.register_blocks("t", [(text, 9) for text in CORPUS], "port", "d1")
            before = {q: [h.block_id for h in old.search("t", "port", q, 5)] for q in RANKINGS}
            old.migrate()
            assert migrations.current_revision(engine) == "0007"
            assert [b.block_id for b in old.list_collection("t", "port")] == ids
            assert {q: [h.block_id for h in old.search("t", "port", q, 5)] for q in RANKINGS} == before
            if which == "postgres":
                with engine.connect() as conn:
                    options = conn.execute(sa.text(
                        "SELECT reloptions FROM pg_class WHERE relname = 'ix_blocks_search'")).scalar()
                    # the pending list the rows above went to was merged: none left to merge
                    pending = conn.execute(sa.text("SELECT gin_clean_pending_list('ix_blocks_search')")).scalar()
                assert options == ["fastupdate=off"] and pending == 0
        finally:
            engine.dispose()

    on_fresh_database(which, tmp_path, scenario)



def test_postgres_plans_a_common_words_ranking_with_its_words(postgres_url: str) -> None:
    # A prepared statement's generic plan, made without the words, reads the whole GIN posting list
    # of a common word before the MAX_RANKED cut (8 ms at 100,000 blocks, growing with them): a
    # question whose selecting words hold more than MAX_RANKED blocks has its ranking planned with
    # them, for its own transaction; a question of rare words keeps the prepared plan.
    with CacheIndex.open(postgres_url) as index:
        with index.engine.begin() as conn:
            conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY"))
        index.register_blocks("t", [(text, 20) for text in FILLER + ANSWERS], "port", "d1")
        analyze(index)
        statements: list[str] = []
        sa.event.listen(index.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        for _ in range(8):  # past psycopg's prepare threshold (5)
            assert len(index.search("t", "port", "the town harbour in summer", 5)) == 5
        assert sum("SET LOCAL plan_cache_mode = force_custom_plan" in s for s in statements) == 8
        statements.clear()
        assert index.search("t", "port", "Who signs permits in Tolvik?", 1)
        assert not [s for s in statements if "plan_cache_mode" in s]
