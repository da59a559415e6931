"""Block search: the blocks of a collection that best match a question, ranked by the database's
own full-text index (created by migration 0003), so a question costs what its matches cost and
not what the collection holds.

A search has two stages. Candidates: the blocks holding the question's rarest words, taken
rarest first while their blocks add up to at most MAX_CANDIDATES (the rarest word always, even
alone past it). Ranking: the candidates only, by every word of the question. A common word
("the", "town", "make") would bring in a share of the collection, every block of it to be
scored: the cost of a question would grow with the collection. A bound in blocks, not in a
share of them, keeps a question's candidates about as many at 100,000 blocks as at 10,000.
The answer to a question names something; the blocks that name it are among the candidates.
A question that names nothing ("Who founded the company?") selects its least common word's
blocks, as many as the collection holds (at 100,000 blocks, 22,000 hold "found": 75 ms to rank
them all on PostgreSQL, 4 ms at 10,000): so the candidates are also cut at MAX_RANKED blocks,
the first the index yields (table order, not the best). A question that names something has
far fewer (on the QA set's held-out questions at 100,000 blocks, 18 at most), untouched by the
cut.

- SQLite: FTS5 (porter-stemmed unicode61 tokens). Each word's blocks are counted in the index,
  no further than COUNTED_BLOCKS (below); a word in no block selects nothing and is left out of
  the choice. Scored by BM25 with bm25()'s constants and IDF formula, over every word (the IDF
  of a word past COUNTED_BLOCKS estimated, the mean block length taken over the candidates): on
  the QA set, the same recall as bm25() over every match. Its cost follows candidates times
  words (each word's instances read per candidate): a question naming nothing, cut at
  MAX_RANKED, takes 11 ms (bench/README.md) at 10,000 blocks as at 100,000 (2 ms with a cut at
  50 measured, at the risk of cutting a named word's blocks).
- PostgreSQL: the generated tsvector column (english configuration: stemmed, stop words
  dropped) under its GIN index (fastupdate off since migration 0006: no pending list that every
  search would scan). A lexeme's blocks are estimated from the planner's statistics
  (pg_stats.most_common_elems times the table's row count, which ANALYZE and autovacuum keep; a
  lexeme not listed there counts 0, being rarer than any listed; before the first ANALYZE every
  lexeme does). Scored by ts_rank over every lexeme (term frequency, no inverse document
  frequency: a stop word list stands in for it).

A block is a candidate through any of the selecting words: an AND of every word would find
nothing for most natural questions. Ties are broken by block id, so a result is reproducible.
The counts (and so which words select, and the scores) are those of the whole index, every
tenant's blocks together: other tenants' text can change a little which of a tenant's blocks
come first, never that only the tenant's own blocks of the collection come.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import NamedTuple

import sqlalchemy as sa

from blockrag.errors import InvalidRequestError

MAX_K = 1000  # blocks one search returns at most
MAX_TERMS = 64  # distinct words of a question searched; past them, the rest is ignored
# Blocks one search ranks, about at most: its words select candidates rarest first while their
# blocks add up to no more than this.
MAX_CANDIDATES = 50
# Blocks one search ranks at most, whatever its selecting words hold (see above): four times
# MAX_CANDIDATES, so that the words' estimated counts may be well short before it cuts.
MAX_RANKED = 200
_WORD = re.compile(r"\w+", re.UNICODE)

# Objects of migration 0003 that index_schema does not describe (they differ by backend).
SEARCH_OBJECTS = frozenset({"block_search", "search_vector", "ix_blocks_search"})


@dataclass(frozen=True)
class SearchHit:
    """One block found. ``score``: higher is better, comparable within one result only (each
    backend scores its own way)."""

    block_id: str
    score: float
    text: str
    token_count: int


def search_terms(query: object, k: object) -> list[str]:
    """The distinct lower-cased words of ``query`` that a search looks for, after checking the
    request: a non-empty query and 1 <= k <= MAX_K (InvalidRequestError otherwise). A query of
    punctuation alone has no words: it finds nothing."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidRequestError("the search query is empty: pass the question's text")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidRequestError(f"k must be between 1 and {MAX_K} blocks; got {k!r}")
    return list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))[:MAX_TERMS]


def search_blocks(
    conn: sa.Connection, tenant: str, collection: str, terms: list[str], k: int
) -> list[SearchHit]:
    """The ``k`` best blocks of (tenant, collection) for ``terms`` (from search_terms), best
    first."""
    if not terms:
        return []
    if conn.dialect.name == "postgresql":
        rows = _search_postgresql(conn, tenant, collection, terms, k)
    else:
        rows = _search_sqlite(conn, tenant, collection, terms, k)
    return [SearchHit(r.block_id, float(r.score), r.text, r.token_count) for r in rows]


# A candidate's collection is one probe of ix_document_blocks_block (plus the documents row).
_IN_COLLECTION = """
  AND EXISTS (SELECT 1 FROM document_blocks p JOIN documents d ON d.seq = p.document_seq
              WHERE p.tenant = :tenant AND p.block_id = b.block_id AND d.collection = :collection)
"""

# -- SQLite ----------------------------------------------------------------------------------

# FTS5's bm25 would count, for its inverse document frequencies, every block holding each word
# of the question ("the": all of them) on every search. The words are counted here instead, each
# no further than its first COUNTED_BLOCKS blocks (in rowid order): a word found that often
# holds about COUNTED_BLOCKS * rows / (rowid of the last one counted) blocks, an estimate for
# its IDF that costs what a rare word's exact count does. The candidates are then scored by the
# same BM25 (FTS5's constants and IDF formula) over every word of the question, from each
# word's instances in each candidate, read from the index (highlight()).
COUNTED_BLOCKS = 200
_K1, _B = 1.2, 0.75  # FTS5's bm25 constants


def selecting(blocks: list[float]) -> list[int]:
    """The places of the words that select candidates, given each word's blocks: rarest first
    while their blocks add up to at most MAX_CANDIDATES; the rarest (all as rare) always."""
    chosen: list[int] = []
    total, least = 0.0, min(blocks, default=0.0)
    for i in sorted(range(len(blocks)), key=lambda i: blocks[i]):
        total += blocks[i]
        if total > MAX_CANDIDATES and blocks[i] > least:
            break
        chosen.append(i)
    return chosen


def _union(selects: dict[int, str]) -> sa.TextClause:
    """Selects by word place (each with {i} for the place) as one statement."""
    return sa.text(" UNION ALL ".join(select.format(i=i) for i, select in selects.items()))


_SQLITE_ROWS = sa.text("SELECT max(rowid) FROM block_search")  # rows ever indexed; none deleted
_COUNT = ("SELECT {i}, count(*), max(rowid) FROM "
          "(SELECT rowid FROM block_search WHERE block_search MATCH :w{i} LIMIT :counted)")
_CANDIDATES = sa.text(f"""
SELECT s.rowid, s.block_id, b.text, b.token_count
FROM block_search s JOIN blocks b ON b.tenant = s.tenant AND b.block_id = s.block_id
WHERE block_search MATCH :match AND s.tenant = :tenant {_IN_COLLECTION}
LIMIT :ranked
""")
# A word's instances in the candidates: highlight() marks each one (\x01) in the candidate's
# text. "rowid IN" has FTS5 seek each candidate in the word's doclist (some 20 us a seek);
# "+rowid IN" walks the doclist and leaves the other rows (some 0.1 us a row), cheaper for a
# word in fewer than WALK_PER_SEEK blocks per candidate.
_INSTANCES = ("SELECT {{i}}, rowid, highlight(block_search, 0, char(1), '') FROM block_search "
              "WHERE block_search MATCH :w{{i}} AND {rowid} IN (SELECT value FROM json_each(:rowids))")
_SEEK, _WALK = _INSTANCES.format(rowid="rowid"), _INSTANCES.format(rowid="+rowid")
WALK_PER_SEEK = 100


def _phrase(term: str) -> str:
    # Each word quoted: FTS5 reads it as a plain string, never as an operator or column.
    return f'"{term}"'


def _search_sqlite(conn: sa.Connection, tenant: str, collection: str, terms: list[str], k: int):
    words = {f"w{i}": _phrase(t) for i, t in enumerate(terms)}
    rows = conn.execute(_SQLITE_ROWS).scalar() or 0
    blocks = [0.0] * len(terms)  # each word's blocks, counted or estimated
    counts = _union(dict.fromkeys(range(len(terms)), _COUNT))
    for i, n, last in conn.execute(counts, {**words, "counted": COUNTED_BLOCKS}):
        blocks[i] = float(n) if n < COUNTED_BLOCKS else n * rows / last
    # A word in no block selects none; counted as the rarest, it would leave the question's
    # common words out ("Which town has a harbour?": "which" and "has" in no block, nothing found).
    present = [i for i, n in enumerate(blocks) if n > 0]
    if not present:
        return []
    match = " OR ".join(_phrase(terms[present[j]]) for j in selecting([blocks[i] for i in present]))
    params = {"tenant": tenant, "collection": collection, "match": match, "ranked": MAX_RANKED}
    candidates = conn.execute(_CANDIDATES, params).all()
    if not candidates:
        return []
    # FTS5's IDF; a word in half the blocks or more weighs 1e-6 (as in bm25()): its instances
    # could only break a tie, and are read when walking costs little, never seeking.
    idf = [max(math.log((rows - n + 0.5) / (n + 0.5)), 1e-6) if rows else 1e-6 for n in blocks]
    walk = WALK_PER_SEEK * len(candidates)
    reads = {i: _WALK if n <= walk else _SEEK for i, n in enumerate(blocks) if n <= walk or idf[i] > 1e-6}
    instances: dict[int, list[tuple[int, int]]] = {c.rowid: [] for c in candidates}  # (word, count)
    found = conn.execute(_union(reads), {**words, "rowids": json.dumps(list(instances))}) if reads else []
    for i, rowid, marked in found:
        instances[rowid].append((i, marked.count("\x01")))
    # The tokens of a block as FTS5's unicode61 splits them, near enough for a length; the mean
    # length of the candidates stands in for the table's.
    length = {c.rowid: max(1, len(_WORD.findall(c.text))) for c in candidates}
    mean = sum(length.values()) / len(length)

    def bm25(rowid: int) -> float:
        norm = _K1 * (1 - _B + _B * length[rowid] / mean)
        return sum(idf[i] * tf * (_K1 + 1) / (tf + norm) for i, tf in instances[rowid])

    scored = sorted(((bm25(c.rowid), c) for c in candidates), key=lambda sc: (-sc[0], sc[1].block_id))
    return [_Row(c.block_id, score, c.text, c.token_count) for score, c in scored[:k]]


class _Row(NamedTuple):
    block_id: str
    score: float
    text: str
    token_count: int


# -- PostgreSQL ------------------------------------------------------------------------------

# The question's lexemes and the two queries made of them: `query`, the OR of every lexeme
# (plainto_tsquery ANDs the words; its text form with & turned into | is the OR of the same
# lexemes, cast back without re-stemming them), which ranks; and `candidates`, the OR of the
# selecting ones (as `selecting` chooses them), which selects. A lexeme's blocks: its share of
# the column's rows in pg_stats times the table's row count; a lexeme not listed counts 0.
# Returned as text, so the ranking statement below is planned with constants, and planned
# cheaply (one statement of both took longer to plan than to run).
_POSTGRESQL_QUERIES = sa.text("""
WITH lexemes AS (
  SELECT DISTINCT unnest(tsvector_to_array(to_tsvector('english', :words))) AS lexeme
), listed AS (
  SELECT e.lexeme, e.share
  FROM pg_stats s, unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs) AS e(lexeme, share)
  WHERE s.schemaname = current_schema() AND s.tablename = 'blocks' AND s.attname = 'search_vector'
), counts AS (
  SELECT l.lexeme, coalesce(listed.share, 0) * greatest(c.reltuples, 0) AS blocks
  FROM lexemes l LEFT JOIN listed USING (lexeme),
       pg_class c WHERE c.oid = to_regclass('blocks')
), running AS (
  SELECT lexeme, blocks, min(blocks) OVER () AS least,
         sum(blocks) OVER (ORDER BY blocks, lexeme) AS total
  FROM counts
)
SELECT replace(plainto_tsquery('english', :words)::text, ' & ', ' | ') AS query,
       (SELECT string_agg(quote_literal(lexeme), ' | ')::tsquery::text FROM running
        WHERE total <= :max_candidates OR blocks = least) AS candidates,
       (SELECT sum(blocks) FROM running WHERE total <= :max_candidates OR blocks = least) AS selected
""")

# The candidates cut at MAX_RANKED inside, then ranked. For a rare selecting word the planner
# reads the GIN index. For a common one, planned with the words, it scans the table and stops at
# the MAX_RANKED-th match (1 ms for "found" at 100,000 blocks); but psycopg prepares a statement
# run often, and PostgreSQL may then use one generic plan, made without the words: the GIN index,
# whose bitmap holds every block of the word before the cut (8 ms for "found" at 100,000 blocks,
# growing with the collection). So a question whose selecting words hold more than MAX_RANKED
# blocks has its ranking planned with them (plan_cache_mode, for its transaction only).
_CUSTOM_PLAN = sa.text("SET LOCAL plan_cache_mode = force_custom_plan")
_POSTGRESQL = sa.text(f"""
SELECT b.block_id, ts_rank(b.search_vector, CAST(:query AS tsquery)) AS score, b.text, b.token_count
FROM (SELECT b.block_id, b.search_vector, b.text, b.token_count FROM blocks b
      WHERE b.tenant = :tenant AND b.search_vector @@ CAST(:candidates AS tsquery) {_IN_COLLECTION}
      LIMIT :ranked) b
ORDER BY score DESC, b.block_id
LIMIT :k
""")


def _search_postgresql(conn: sa.Connection, tenant: str, collection: str, terms: list[str], k: int):
    words = " ".join(terms)
    queries = conn.execute(_POSTGRESQL_QUERIES, {"words": words, "max_candidates": MAX_CANDIDATES}).one()
    if queries.candidates is None:  # stop words alone: no lexeme
        return []
    if queries.selected > MAX_RANKED:
        conn.execute(_CUSTOM_PLAN)
    params = {"tenant": tenant, "collection": collection, "k": k, "query": queries.query,
              "candidates": queries.candidates, "ranked": MAX_RANKED}
    return conn.execute(_POSTGRESQL, params)
