"""Block search: the blocks of a collection that best match a question, ranked by the database's
own full-text index (created by migration 0003), so a question costs what its matches cost and
not what the collection holds.

- SQLite: FTS5 (porter-stemmed unicode61 tokens), scored by FTS5's BM25. Its statistics
  (block count, average length, term frequencies) are those of the whole table, every tenant's
  blocks together: a score depends a little on other tenants' text, a result never does.
- PostgreSQL: the generated tsvector column (english configuration: stemmed, stop words
  dropped) under its GIN index, scored by ts_rank (term frequency, no inverse document
  frequency: a stop word list stands in for it).

A question matches a block through any of its words: an AND of every word would find nothing
for most natural questions. Ties are broken by block id, so a result is reproducible.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa

from blockrag.errors import InvalidRequestError

MAX_K = 1000  # blocks one search returns at most
MAX_TERMS = 64  # distinct words of a question searched; past them, the rest is ignored
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


# A candidate's collection is one probe of ix_document_blocks_block (plus the documents row).
_IN_COLLECTION = """
  AND EXISTS (SELECT 1 FROM document_blocks p JOIN documents d ON d.seq = p.document_seq
              WHERE p.tenant = :tenant AND p.block_id = b.block_id AND d.collection = :collection)
"""

_SQLITE = sa.text(f"""
SELECT s.block_id, -bm25(block_search) AS score, b.text, b.token_count
FROM block_search s JOIN blocks b ON b.tenant = s.tenant AND b.block_id = s.block_id
WHERE block_search MATCH :match AND s.tenant = :tenant {_IN_COLLECTION}
ORDER BY score DESC, s.block_id
LIMIT :k
""")

# plainto_tsquery ANDs the words; its text form with & turned into | is the OR of the same
# lexemes (cast back without re-stemming them). That OR ranks the candidates. The candidates are
# the blocks holding one of the question's *rarest* lexemes: those in at most COMMON_SHARE of all
# blocks, or else the least common one(s), by the planner's statistics of the column
# (pg_stats.most_common_elems, which ANALYZE and autovacuum keep; a lexeme not listed there is
# rarer than any listed). A common lexeme ("town", "make") would bring in a large share of the
# collection, each block to be ranked: the cost would grow with the collection. It still counts
# in the rank of the candidates. Before the first ANALYZE every lexeme selects.
COMMON_SHARE = 0.01
_POSTGRESQL = sa.text(f"""
WITH lexemes AS (
  SELECT DISTINCT unnest(tsvector_to_array(to_tsvector('english', :words))) AS lexeme
), listed AS (
  SELECT e.lexeme, e.share
  FROM pg_stats s, unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs) AS e(lexeme, share)
  WHERE s.schemaname = current_schema() AND s.tablename = 'blocks' AND s.attname = 'search_vector'
), shares AS (
  SELECT l.lexeme, coalesce(listed.share, 0) AS share FROM lexemes l LEFT JOIN listed USING (lexeme)
), q AS (
  SELECT replace(plainto_tsquery('english', :words)::text, ' & ', ' | ')::tsquery AS query,
         (SELECT string_agg(quote_literal(lexeme), ' | ')::tsquery FROM shares
          WHERE share <= greatest(:common_share, (SELECT min(share) FROM shares))) AS candidates
)
SELECT b.block_id, ts_rank(b.search_vector, q.query) AS score, b.text, b.token_count
FROM blocks b, q
WHERE b.tenant = :tenant AND b.search_vector @@ q.candidates {_IN_COLLECTION}
ORDER BY score DESC, b.block_id
LIMIT :k
""")


def search_blocks(
    conn: sa.Connection, tenant: str, collection: str, terms: list[str], k: int
) -> list[SearchHit]:
    """The ``k`` best blocks of (tenant, collection) for ``terms`` (from search_terms), best
    first."""
    if not terms:
        return []
    params: dict[str, object] = dict(tenant=tenant, collection=collection, k=k)
    if conn.dialect.name == "postgresql":
        statement, params["words"] = _POSTGRESQL, " ".join(terms)
        params["common_share"] = COMMON_SHARE
    else:
        # Each word quoted: FTS5 reads it as a plain string, never as an operator or column.
        statement, params["match"] = _SQLITE, " OR ".join(f'"{t}"' for t in terms)
    return [SearchHit(r.block_id, float(r.score), r.text, r.token_count)
            for r in conn.execute(statement, params)]
