"""CacheIndex: which blocks exist, which documents they form, and where their KV is stored.

Per tenant (a namespace; "" means "default"):

- blocks: the text of every registered block, named by ``block_id_for(tenant, text)``;
- documents: a document is an ordered list of blocks inside a collection;
- kv_entries: the location (in an ObjectStore) of a block's KV for one model version, with
  its size, last access time and hit count, which drive eviction.

The index only stores locations: callers write the object first and commit its entry after,
and delete objects after ``evict`` returned their entries. An entry may therefore outlive its
object for a moment; a reader then gets a miss from the store, never wrong bytes.

Every method runs short transactions on a connection of its own, so one index is safe to share
between threads; processes share it through the database.

The same database holds the model registry (blockrag.registry): ``open_index_engine`` gives a
migrated engine, and ``transaction`` the error handling, to every store over it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import sqlalchemy as sa
from alembic.util.exc import CommandError
from sqlalchemy.exc import SQLAlchemyError

from blockrag.errors import CacheIndexError, InvalidRequestError
from blockrag.kvcache import index_schema as db
from blockrag.kvcache import migrations
from blockrag.kvcache.index_engine import (
    IndexConfig,
    create_index_engine,
    shown_url,
    writer,
)
from blockrag.kvcache.index_search import SearchHit, search_blocks, search_terms
from blockrag.kvcache.index_usage import Charge, Usage, admit, prune, release_hold
from blockrag.kvcache.index_sql import (
    EntryRow,
    chunks,
    delete_entries,
    evict_idle,
    evict_lru,
    evict_lru_of,
    upsert,
)
from blockrag.kvcache.index_writes import (
    Finished,
    abandon_writes,
    begin_writes,
    claim_blocks,
    expire_claims,
    expire_writes,
    finish_writes,
    named,
    release_claims,
)

DEFAULT_TENANT = "default"


def open_index_engine(config: str | IndexConfig) -> sa.Engine:
    """An engine for ``config`` (a URL or an IndexConfig), migrated to the newest schema.

    Raises StorageConfigError for an unusable URL, CacheIndexError when the database cannot
    be reached or migrated. The caller disposes of the engine.
    """
    engine = create_index_engine(IndexConfig(config) if isinstance(config, str) else config)
    try:
        migrate_index(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def migrate_index(engine: sa.Engine) -> None:
    """Bring the schema to the newest revision; idempotent, safe to run concurrently."""
    try:
        migrations.upgrade(writer(engine))
    except CommandError as e:
        raise CacheIndexError(
            f"cannot migrate the cache index at {shown_url(engine)}: {e} (was it migrated by a "
            f"newer blockrag?)"
        ) from e
    except SQLAlchemyError as e:
        raise _database_error(engine, "migrate", e) from e


@contextmanager
def transaction(engine: sa.Engine, action: str, *, write: bool = False) -> Iterator[sa.Connection]:
    """One transaction (taking SQLite's write lock up front when ``write``); database failures
    become CacheIndexError naming ``action``."""
    try:
        with (writer(engine) if write else engine).begin() as conn:
            yield conn
    except SQLAlchemyError as e:
        raise _database_error(engine, action, e) from e


def _database_error(engine: sa.Engine, action: str, e: SQLAlchemyError) -> CacheIndexError:
    cause = str(getattr(e, "orig", None) or e).strip()
    detail = cause.splitlines()[0] if cause else type(e).__name__
    return CacheIndexError(f"cache index at {shown_url(engine)}: {action} failed: {detail}")


def block_id_for(tenant: str, text: str) -> str:
    """The id of a block: "blk_" + 32 hex of SHA-256(utf8(tenant) NUL utf8(text)).

    Stable across processes and hosts; "" and "default" are the same tenant.
    """
    tenant = _tenant(tenant)
    _check_text(text, "block text")
    digest = hashlib.sha256(tenant.encode() + b"\0" + text.encode()).hexdigest()
    return "blk_" + digest[:32]


@dataclass(frozen=True)
class StoredBlock:
    block_id: str
    text: str
    token_count: int


@dataclass(frozen=True)
class LookupRow:
    """What the index knows of one requested block. ``known``: the block is registered;
    ``hit``: its KV is stored for the model version (then location and nbytes are set)."""

    block_id: str
    known: bool
    hit: bool
    location: str  # "" unless hit
    nbytes: int  # 0 unless hit
    token_count: int  # 0 unless known


@dataclass(frozen=True)
class KVEntry:
    """A stored KV object of one block for one model version."""

    block_id: str
    model_version: str
    location: str
    nbytes: int


class Evicted(NamedTuple):
    tenant: str
    entry: KVEntry


class TenantUsage(NamedTuple):
    tenant: str
    entries: int
    bytes: int


class VersionStats(NamedTuple):
    model_version: str
    entries: int
    bytes: int


@dataclass(frozen=True)
class IndexStats:
    blocks: int
    documents: int
    collections: int
    entries: int
    bytes: int
    by_model_version: tuple[VersionStats, ...]  # sorted by model_version


def _lookup_statement(lateral: bool) -> sa.Select:
    """Each requested block (ids: an expanding parameter) and its entry for a model version."""
    b, k = db.blocks.c, db.kv_entries.c
    of_block = (k.tenant == b.tenant, k.block_id == b.block_id,
                k.model_version == sa.bindparam("model_version"))
    if lateral:
        # PostgreSQL: one probe of kv_entries' key per block. Joined plainly, the planner hashes
        # every entry of the table once the entries outnumber the probes (2 ms at 10,000
        # entries, growing with them, against 0.3); LIMIT keeps the subquery from being merged
        # into such a join.
        entry = sa.select(k.location, k.nbytes).where(*of_block).limit(1).lateral("entry")
        source, location, nbytes = db.blocks.outerjoin(entry, sa.true()), entry.c.location, entry.c.nbytes
    else:  # SQLite (no LATERAL) probes the key per block anyway
        source, location, nbytes = db.blocks.outerjoin(db.kv_entries, sa.and_(*of_block)), k.location, k.nbytes
    return (
        sa.select(b.block_id, b.token_count, location, nbytes)
        .select_from(source)
        .where(b.tenant == sa.bindparam("tenant"), b.block_id.in_(sa.bindparam("ids", expanding=True)))
    )


# Built once, not per call: Generate looks blocks up on every request, and building the
# statement (and its cache key) cost more than running it.
_LOOKUP = {lateral: _lookup_statement(lateral) for lateral in (False, True)}


class CacheIndex:
    """The index over one database (see the module docstring). Build it with ``open``."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], float] = time.time):
        """Wrap an engine made by ``create_index_engine`` (not migrated: see ``open``).
        ``clock`` (unix seconds) stamps entries; tests pass their own to order accesses."""
        self._engine = engine
        self._clock = clock

    @classmethod
    def open(
        cls, config: str | IndexConfig, *, clock: Callable[[], float] = time.time
    ) -> CacheIndex:
        """Connect to the database of ``config`` (a URL or an IndexConfig) and migrate it.

        Raises StorageConfigError for an unusable URL, CacheIndexError when the database
        cannot be reached or migrated.
        """
        return cls(open_index_engine(config), clock=clock)

    def migrate(self) -> None:
        """Bring the schema to the newest revision; idempotent, safe to run concurrently."""
        migrate_index(self._engine)

    @property
    def engine(self) -> sa.Engine:
        """The engine, to build the registry's stores (blockrag.registry) over the same pool."""
        return self._engine

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return shown_url(self._engine)

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> CacheIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CacheIndex({self.url!r})"

    # -- blocks and documents --------------------------------------------------------------

    def register_blocks(
        self,
        tenant: str,
        blocks: Sequence[tuple[str, int]],
        collection: str | None = None,
        document_id: str | None = None,
        *,
        plan: str | None = None,
    ) -> list[str]:
        """Register blocks given as (text, token_count); their ids, in order.

        Registering known text again only updates its token count. With ``collection`` and
        ``document_id`` (both or neither) the blocks also become that document, replacing the
        blocks it had; a re-registered document keeps its place in the ingest order. With
        ``plan`` (a writer's plan id) the blocks are claimed for it in the same transaction:
        ``forget_blocks`` keeps them until ``end_plan`` (index_writes says why).
        """
        tenant = _tenant(tenant)
        if plan is not None:
            plan = _plan(plan)
        if (collection is None) != (document_id is None):
            raise InvalidRequestError(
                "give collection and document_id together (a document lives in a collection) "
                f"or neither; got collection={collection!r}, document_id={document_id!r}"
            )
        now = self._clock()
        rows: dict[str, dict[str, object]] = {}
        ids = _block_rows(tenant, blocks, now, rows)
        with self._transaction("register blocks", write=True) as conn:
            if rows:
                upsert(conn, db.blocks, [rows[k] for k in sorted(rows)],
                       keys=("tenant", "block_id"), update=("token_count",))
                if plan is not None:
                    claim_blocks(conn, plan, tenant, list(rows), now)
            if collection is not None and document_id is not None:
                document = dict(tenant=tenant, collection=_name(collection, "collection"),
                                document_id=_name(document_id, "document_id"))
                self._replace_document(conn, document, ids, now)
        return ids

    def register_documents(
        self, tenant: str, collection: str, documents: Sequence[tuple[str, Sequence[tuple[str, int]]]]
    ) -> list[list[str]]:
        """Register documents of one collection, each given as (document_id, blocks as (text,
        token_count)): ``register_blocks`` with a document, for all of them in one transaction,
        so that an ingest of N documents is one call and one commit (all recorded, or none).
        Their block ids, per document, in order; documents keep the given ingest order."""
        tenant, collection = _tenant(tenant), _name(collection, "collection")
        now = self._clock()
        named: dict[str, list[str]] = {}  # document_id -> its block ids, in the given order
        rows: dict[str, dict[str, object]] = {}
        for d, (document_id, blocks) in enumerate(documents):
            document_id = _name(document_id, f"document_id of document {d}")
            if document_id in named:  # the second would silently replace the first
                raise InvalidRequestError(f"document {document_id!r} is given twice: give each document once")
            named[document_id] = _block_rows(tenant, blocks, now, rows)
        with self._transaction("register documents", write=True) as conn:
            if rows:
                upsert(conn, db.blocks, [rows[k] for k in sorted(rows)],
                       keys=("tenant", "block_id"), update=("token_count",))
            _lock_documents(conn, tenant, collection, list(named))
            for document_id, ids in named.items():
                self._replace_document(conn, dict(tenant=tenant, collection=collection, document_id=document_id),
                                       ids, now)
        return list(named.values())

    @staticmethod
    def _replace_document(
        conn: sa.Connection, document: dict[str, str], block_ids: list[str], now: float
    ) -> None:
        d = db.documents.c
        upsert(conn, db.documents, [dict(document, created_at=now)],
               keys=("tenant", "collection", "document_id"))
        seq = conn.execute(
            sa.select(d.seq).where(*(d[k] == v for k, v in document.items()))
        ).scalar_one()
        conn.execute(sa.delete(db.document_blocks).where(db.document_blocks.c.document_seq == seq))
        if block_ids:
            tenant = document["tenant"]
            conn.execute(
                sa.insert(db.document_blocks),
                [dict(document_seq=seq, position=i, tenant=tenant, block_id=b)
                 for i, b in enumerate(block_ids)],
            )

    def forget_blocks(self, tenant: str, block_ids: Sequence[str], *, plan: str | None = None) -> list[str]:
        """Delete the blocks of ``block_ids`` that nothing uses: no document lists them, no KV
        entry (of any version), write in flight or other writer's plan (``register_blocks``)
        names them. What a failed write registered for its plan goes this way, so a reader never
        finds a block whose ingest failed; ``plan``: that plan, ended first in the same
        transaction (``end_plan``). The ids deleted, sorted.

        Only for blocks the caller registered itself just before: a block another client holds
        the id of (returned by Precompute, its entry evicted since) would become unknown."""
        tenant, ids = _tenant(tenant), _ids(block_ids)
        b, p, k, w, c = db.blocks.c, db.document_blocks.c, db.kv_entries.c, db.kv_writes.c, db.block_claims.c
        unused = [~sa.exists().where(p.tenant == b.tenant, p.block_id == b.block_id),
                  ~sa.exists().where(k.tenant == b.tenant, k.block_id == b.block_id),
                  ~sa.exists().where(w.tenant == b.tenant, w.block_id == b.block_id),
                  ~sa.exists().where(c.tenant == b.tenant, c.block_id == b.block_id)]
        deleted: list[str] = []
        with self._transaction("forget blocks", write=True) as conn:
            if plan is not None:
                self._end_plan(conn, _plan(plan))
            for chunk in chunks(sorted(set(ids))):
                # The rows first, then "nothing uses them" in a statement of its own: PostgreSQL's
                # statement sees what committed before it began, so a DELETE that checked, then
                # waited on a row, missed an intent committed meanwhile and deleted a block a
                # write was under way for. Locked first, the check comes after such a writer
                # (begin_writes holds its blocks' rows) and sees its intent; a plan's claim commits
                # with its upsert of the block's row, so likewise. (SQLite: one writer.)
                conn.execute(sa.select(b.block_id).where(b.tenant == tenant, b.block_id.in_(chunk)).with_for_update())
                deleted += conn.execute(sa.delete(db.blocks).where(b.tenant == tenant, b.block_id.in_(chunk), *unused)
                                        .returning(b.block_id)).scalars()
        return sorted(deleted)

    def get_blocks(self, tenant: str, block_ids: Sequence[str]) -> list[StoredBlock | None]:
        """The stored blocks, in request order; None for an unknown id."""
        tenant, ids = _tenant(tenant), _ids(block_ids)
        b = db.blocks.c
        found: dict[str, StoredBlock] = {}
        with self._transaction("get blocks") as conn:
            for chunk in chunks(sorted(set(ids))):
                query = sa.select(b.block_id, b.text, b.token_count).where(
                    b.tenant == tenant, b.block_id.in_(chunk)
                )
                found.update((r.block_id, StoredBlock(*r)) for r in conn.execute(query))
        return [found.get(i) for i in ids]

    def list_collection(
        self, tenant: str, collection: str, limit: int | None = None
    ) -> list[StoredBlock]:
        """The blocks of a collection: documents in ingest order, each in block order; the
        first ``limit`` only, when given."""
        b, d, p = db.blocks.c, db.documents.c, db.document_blocks.c
        query = (
            sa.select(b.block_id, b.text, b.token_count)
            .select_from(
                db.documents.join(db.document_blocks, p.document_seq == d.seq).join(
                    db.blocks, sa.and_(b.tenant == p.tenant, b.block_id == p.block_id)
                )
            )
            .where(d.tenant == _tenant(tenant), d.collection == _name(collection, "collection"))
            .order_by(d.seq, p.position)
            .limit(limit)
        )
        with self._transaction("list collection") as conn:
            return [StoredBlock(*r) for r in conn.execute(query)]

    def search(self, tenant: str, collection: str, query: str, k: int) -> list[SearchHit]:
        """The ``k`` blocks of the collection that best match ``query`` (any of its words),
        best first, through the database's full-text index (index_search); fewer when fewer
        match, none for an unknown collection. InvalidRequestError for an empty query or k
        outside 1..index_search.MAX_K."""
        terms = search_terms(query, k)
        tenant, collection = _tenant(tenant), _name(collection, "collection")
        with self._transaction("search blocks") as conn:
            return search_blocks(conn, tenant, collection, terms, k)

    def collections(self, tenant: str) -> list[str]:
        """The tenant's collections, in the order of their first ingested document."""
        d = db.documents.c
        query = (
            sa.select(d.collection)
            .where(d.tenant == _tenant(tenant))
            .group_by(d.collection)
            .order_by(sa.func.min(d.seq))
        )
        with self._transaction("list collections") as conn:
            return list(conn.execute(query).scalars())

    # -- KV entries ------------------------------------------------------------------------

    def lookup(self, tenant: str, block_ids: Sequence[str], model_version: str) -> list[LookupRow]:
        """What is known and stored of each block for ``model_version``, in request order.

        A read only (no write lock, so lookups never queue behind writers): accesses are
        counted apart, in batches, by ``record_hits``.
        """
        tenant, ids = _tenant(tenant), _ids(block_ids)
        model_version = _name(model_version, "model_version")
        found: dict[str, LookupRow] = {}
        with self._transaction("look up blocks") as conn:
            for chunk in chunks(sorted(set(ids))):
                params = {"tenant": tenant, "model_version": model_version, "ids": list(chunk)}
                for r in conn.execute(_LOOKUP[conn.dialect.name == "postgresql"], params):
                    hit = r.location is not None
                    found[r.block_id] = LookupRow(
                        r.block_id, True, hit, r.location or "", r.nbytes or 0, r.token_count
                    )
        return [found.get(i) or LookupRow(i, False, False, "", 0, 0) for i in ids]

    def record_hits(
        self, tenant: str, model_version: str, counts: Mapping[str, int], at: float | None = None
    ) -> None:
        """Add ``counts`` (block id -> hits) to the entries of ``model_version`` and mark them
        accessed at ``at`` (default: now); entries evicted since are skipped. One transaction
        for the whole batch: callers collect hits off the request path (resolve.AccessLog)."""
        tenant, model_version = _tenant(tenant), _name(model_version, "model_version")
        by_count: dict[int, list[str]] = {}
        for block_id, n in sorted(counts.items()):
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise InvalidRequestError(f"hit counts must be ints >= 0; got {n!r} for {block_id}")
            if n:
                by_count.setdefault(n, []).append(_name(block_id, "block_id"))
        if not by_count:
            return
        now = self._clock() if at is None else at
        k = db.kv_entries.c
        # one UPDATE per distinct count (most blocks share a few counts), ids sorted so that
        # concurrent batches lock rows in one order
        with self._transaction("record cache hits", write=True) as conn:
            for n, ids in sorted(by_count.items()):
                for chunk in chunks(ids):
                    conn.execute(
                        sa.update(db.kv_entries)
                        .where(k.tenant == tenant, k.model_version == model_version,
                               k.block_id.in_(chunk))
                        .values(hits=k.hits + n,
                                last_access_at=sa.func.max(k.last_access_at, now)
                                if conn.dialect.name == "sqlite"
                                else sa.func.greatest(k.last_access_at, now))
                    )

    def hottest_blocks(self, tenant: str, model_version: str, limit: int) -> list[StoredBlock]:
        """The tenant's ``limit`` most-hit blocks stored for ``model_version``, most hits first
        (ties: the most recently used first): what to re-encode before a switch to another
        version, so the first questions after it find their blocks cached."""
        if limit <= 0:
            return []
        tenant, model_version = _tenant(tenant), _name(model_version, "model_version")
        b, k = db.blocks.c, db.kv_entries.c
        query = (
            sa.select(b.block_id, b.text, b.token_count)
            .join(db.kv_entries, sa.and_(k.tenant == b.tenant, k.block_id == b.block_id))
            .where(k.tenant == tenant, k.model_version == model_version)
            .order_by(k.hits.desc(), k.last_access_at.desc(), b.block_id)
            .limit(limit)
        )
        with self._transaction("read the most-hit blocks") as conn:
            return [StoredBlock(*r) for r in conn.execute(query)]

    def commit_entries(self, tenant: str, entries: Sequence[KVEntry]) -> None:
        """Record stored KV objects: insert, or replace location and size (keeping hits).

        The blocks must be registered (InvalidRequestError otherwise, and nothing is
        committed). A committed entry counts as accessed now. A writer that puts objects itself
        should go through ``begin_writes``/``finish_writes`` (kvcache.EntryWriter) instead:
        an object committed here is protected from the orphan sweeper only by its grace period
        until this call, and the object a replaced row named is left to the sweeper.
        """
        tenant = _tenant(tenant)
        rows = self._entry_rows(tenant, entries)
        if not rows:
            return
        with self._transaction("commit entries", write=True) as conn:
            _check_registered(conn, tenant, sorted({str(r["block_id"]) for r in rows}))
            upsert(conn, db.kv_entries, rows, keys=("tenant", "block_id", "model_version"),
                   update=("location", "nbytes", "created_at", "last_access_at"))

    def begin_writes(self, tenant: str, entries: Sequence[KVEntry]) -> None:
        """Record that the objects of ``entries`` (at unique locations) are about to be put.

        Until ``finish_writes`` swaps them for entries (or the sweeper expires them after its
        grace period), the sweeper keeps those objects. InvalidRequestError for an unregistered
        block, as ``commit_entries``."""
        tenant = _tenant(tenant)
        rows = self._entry_rows(tenant, entries)
        with self._transaction("begin writes", write=True) as conn:
            # the blocks' rows held until the intents commit: forget_blocks then sees them
            _check_registered(conn, tenant, sorted({str(r["block_id"]) for r in rows}), lock=True)
            begin_writes(conn, tenant, [(str(r["location"]), str(r["block_id"]), str(r["model_version"]))
                                        for r in rows], self._clock())

    def finish_writes(self, tenant: str, entries: Sequence[KVEntry], *,
                      replace_before: float | None = None) -> Finished:
        """Commit the entries whose writes ``begin_writes`` recorded, in one transaction with
        the removal of their intents (index_writes.finish_writes: who wins, what to delete)."""
        tenant = _tenant(tenant)
        rows = self._entry_rows(tenant, entries)
        with self._transaction("finish writes", write=True) as conn:
            return finish_writes(conn, tenant, rows, replace_before=replace_before)

    def end_plan(self, plan: str) -> None:
        """Release what a writer's plan holds (its block claims, its bytes hold): its write ended,
        committed or not."""
        plan = _plan(plan)
        with self._transaction("end a write plan", write=True) as conn:
            self._end_plan(conn, plan)

    @staticmethod
    def _end_plan(conn: sa.Connection, plan: str) -> None:
        release_claims(conn, plan)
        release_hold(conn, plan)

    def admit_usage(self, tenant: str, charge: Charge, check: Callable[[Usage], None]) -> None:
        """One quota admission, atomic across every writer of the database: the tenant's usage
        read under its lock, ``check`` (which raises to refuse, writing nothing), then ``charge``
        recorded (index_usage)."""
        tenant = _tenant(tenant)
        if charge.plan is not None:
            _plan(charge.plan)
        with self._transaction("admit a write under the quotas", write=True) as conn:
            admit(conn, tenant, charge, check)

    def prune_usage(self, now: float) -> int:
        """Delete every tenant's quota rows that no admission reads any more at ``now`` (unix
        seconds): tokens older than index_usage.KEPT_S, lapsed holds; how many. Admissions prune
        their own tenant's: this takes those of tenants gone quiet."""
        with self._transaction("prune quota usage", write=True) as conn:
            return prune(conn, now)

    def abandon_writes(self, locations: Sequence[str]) -> None:
        """Forget the intents (``begin_writes``) of a write that failed before ``finish_writes``:
        the blocks they name are then free to forget, and whatever the write put is an orphan
        no row names, which the sweeper deletes once it is older than its grace period."""
        with self._transaction("abandon writes", write=True) as conn:
            abandon_writes(conn, list(locations))

    def now(self) -> float:
        """The index's clock (unix seconds), which stamps entries: a writer's ``replace_before``."""
        return self._clock()

    def expire_writes(self, before: float) -> list[str]:
        """Forget intents started before ``before`` (unix seconds), and block claims made
        before it (``register_blocks``); the intents' locations, so the caller deletes whatever
        the crashed writers left there."""
        with self._transaction("expire writes", write=True) as conn:
            expire_claims(conn, before)
            return expire_writes(conn, before)

    def named(self, locations: Sequence[str]) -> set[str]:
        """Those of ``locations`` an entry or a write in flight names: objects to keep."""
        with self._transaction("check object locations") as conn:
            return named(conn, list(locations))

    def _entry_rows(self, tenant: str, entries: Sequence[KVEntry]) -> list[dict[str, object]]:
        """kv_entries values, one per (block, version) (the last given wins), sorted by key."""
        latest = {(e.block_id, e.model_version): e for e in map(_entry, entries)}
        now = self._clock()
        return [
            dict(tenant=tenant, block_id=e.block_id, model_version=e.model_version,
                 location=e.location, nbytes=e.nbytes, created_at=now, last_access_at=now, hits=0)
            for _, e in sorted(latest.items())
        ]

    def evict(
        self,
        tenant: str,
        block_ids: Sequence[str] = (),
        model_version: str | None = None,
        max_bytes: int = 0,
    ) -> list[KVEntry]:
        """Delete entries and return them, so the caller deletes their objects.

        Exactly one selector: ``block_ids`` (all their versions, or only ``model_version``);
        ``model_version`` alone (the whole version); or ``max_bytes`` > 0 (the tenant's least
        recently used entries until its entries total at most max_bytes, returned in eviction
        order). Anything else raises InvalidRequestError.
        """
        tenant, ids = _tenant(tenant), _ids(block_ids)
        if model_version is not None:
            model_version = _name(model_version, "model_version")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise InvalidRequestError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
        if (max_bytes > 0) == (bool(ids) or model_version is not None):
            raise InvalidRequestError(
                "evict needs exactly one selector: block_ids (optionally with model_version), "
                f"model_version, or max_bytes > 0; got {len(ids)} block id(s), "
                f"model_version={model_version!r}, max_bytes={max_bytes}"
            )
        k = db.kv_entries.c
        version = [k.model_version == model_version] if model_version is not None else []
        with self._transaction("evict entries", write=True) as conn:
            if max_bytes:
                rows = evict_lru(conn, tenant, max_bytes)
            elif ids:
                rows = [row for chunk in chunks(sorted(set(ids)))
                        for row in delete_entries(conn, k.tenant == tenant, k.block_id.in_(chunk),
                                                  *version)]
                rows.sort()
            else:
                rows = sorted(delete_entries(conn, k.tenant == tenant, *version))
        return [_kv_entry(row) for row in rows]

    def evict_least_recent(self, max_bytes: int, tenant: str | None = None) -> list[Evicted]:
        """Delete the least recently used entries of ``tenant`` (None: of the whole store)
        until they total at most ``max_bytes`` (>= 0); what was deleted, oldest first. The
        caller deletes the objects after (kvcache.eviction)."""
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise InvalidRequestError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
        tenant = None if tenant is None else _tenant(tenant)
        with self._transaction("evict least recently used entries", write=True) as conn:
            return [Evicted(t, _kv_entry(row)) for t, row in evict_lru_of(conn, tenant, max_bytes)]

    def evict_idle(self, before: float, tenant: str | None = None) -> list[Evicted]:
        """Delete the entries of ``tenant`` (None: every tenant) last accessed before ``before``
        (unix seconds: a TTL); what was deleted."""
        tenant = None if tenant is None else _tenant(tenant)
        with self._transaction("evict idle entries", write=True) as conn:
            return [Evicted(t, _kv_entry(row)) for t, row in evict_idle(conn, tenant, before)]

    def usage(self) -> list[TenantUsage]:
        """Entries and bytes of every tenant that has entries, by tenant."""
        k = db.kv_entries.c
        query = (sa.select(k.tenant, sa.func.count(), sa.func.sum(k.nbytes))
                 .group_by(k.tenant).order_by(k.tenant))
        with self._transaction("compute usage") as conn:
            return [TenantUsage(t, int(n), int(size)) for t, n, size in conn.execute(query)]

    def stats(self, tenant: str | None = None) -> IndexStats:
        """Counts and sizes of one tenant, or of all tenants when ``tenant`` is None."""
        only = None if tenant is None else _tenant(tenant)

        def count(table: sa.Table | sa.Subquery) -> sa.Select:
            query = sa.select(sa.func.count()).select_from(table)
            return query if only is None else query.where(table.c.tenant == only)

        k = db.kv_entries.c
        by_version = (
            sa.select(k.model_version, sa.func.count(), sa.func.sum(k.nbytes))
            .group_by(k.model_version)
            .order_by(k.model_version)
        )
        if only is not None:
            by_version = by_version.where(k.tenant == only)
        pairs = sa.select(db.documents.c.tenant, db.documents.c.collection).distinct().subquery()
        with self._transaction("compute stats") as conn:
            n_blocks, n_documents, n_collections = (
                conn.execute(count(table)).scalar_one()
                for table in (db.blocks, db.documents, pairs)
            )
            # SUM of a BIGINT is NUMERIC on PostgreSQL: int() it.
            versions = tuple(
                VersionStats(v, int(n), int(size)) for v, n, size in conn.execute(by_version)
            )
        return IndexStats(
            blocks=n_blocks, documents=n_documents, collections=n_collections,
            entries=sum(v.entries for v in versions), bytes=sum(v.bytes for v in versions),
            by_model_version=versions,
        )

    # -- plumbing --------------------------------------------------------------------------

    def _transaction(
        self, action: str, *, write: bool = False
    ) -> AbstractContextManager[sa.Connection]:
        return transaction(self._engine, action, write=write)


# -- request checks: the same rules on every backend (SQLite would store what PostgreSQL
# refuses, such as NUL characters or over-long names) ----------------------------------------


def _tenant(tenant: str | None) -> str:
    return DEFAULT_TENANT if tenant is None or tenant == "" else _name(tenant, "tenant")


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > db.NAME_LEN or "\0" in value:
        raise InvalidRequestError(
            f"{what} must be a non-empty string of at most {db.NAME_LEN} characters without "
            f"NUL; got {value!r:.80}"
        )
    return value


def _plan(plan: object) -> str:
    if not isinstance(plan, str) or not plan or len(plan) > db.PLAN_ID_LEN or "\0" in plan:
        raise InvalidRequestError(f"a write plan id must be a non-empty string of at most {db.PLAN_ID_LEN} "
                                  f"characters; got {plan!r:.80}")
    return plan


def _check_text(text: object, what: str) -> None:
    if not isinstance(text, str) or not text or "\0" in text:
        raise InvalidRequestError(
            f"{what} must be a non-empty string without NUL; got {text!r:.80}"
        )


# pg_advisory_xact_lock(class, key) for one document of a multi-document ingest
_DOCUMENT_LOCK_CLASS = 0x626C646F  # b"bldo"


def _lock_documents(conn: sa.Connection, tenant: str, collection: str, document_ids: Sequence[str]) -> None:
    """On PostgreSQL, lock the documents an ingest writes in one order for every transaction (the
    keys sorted), before any of their rows. The rows themselves are written in the ingest's order
    (which sets the collection's order), and two ingests that name the same documents in other
    orders would each hold one row the other waits for: a deadlock, one of them refused. SQLite
    writes under one database lock and needs none."""
    if conn.dialect.name != "postgresql" or len(document_ids) < 2:
        return
    keys = sorted({int.from_bytes(hashlib.sha256(f"{tenant}\0{collection}\0{d}".encode()).digest()[:4], "big",
                                  signed=True) for d in document_ids})
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(CAST(:lock_class AS integer), k) "
                         "FROM unnest(CAST(:keys AS integer[])) AS t(k)"),
                 {"lock_class": _DOCUMENT_LOCK_CLASS, "keys": keys})


def _block_rows(tenant: str, blocks: Sequence, now: float, rows: dict[str, dict[str, object]]) -> list[str]:
    """The blocks' ids, in the given order; each block's row is added to ``rows`` under its id (a
    text given twice is one row)."""
    ids = []
    for i, item in enumerate(blocks):
        text, token_count = _block(item, i)
        ids.append(block_id_for(tenant, text))
        rows[ids[-1]] = dict(tenant=tenant, block_id=ids[-1], text=text, token_count=token_count, created_at=now)
    return ids


def _block(item: object, i: int) -> tuple[str, int]:
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise InvalidRequestError(f"block {i} must be a (text, token_count) pair; got {item!r:.80}")
    text, token_count = item
    _check_text(text, f"text of block {i}")
    if isinstance(token_count, bool) or not isinstance(token_count, int) or token_count < 1:
        raise InvalidRequestError(
            f"token_count of block {i} must be an int >= 1; got {token_count!r}"
        )
    return text, token_count


def _ids(block_ids: Sequence[str]) -> list[str]:
    if isinstance(block_ids, str):
        raise InvalidRequestError("block_ids must be a sequence of ids, not one string")
    ids = list(block_ids)
    for block_id in ids:
        if not isinstance(block_id, str):
            raise InvalidRequestError(f"block ids must be strings; got {block_id!r:.80}")
    return ids


def _entry(entry: KVEntry) -> KVEntry:
    if not isinstance(entry, KVEntry):
        raise InvalidRequestError(f"entries must be KVEntry; got {type(entry).__name__}")
    _name(entry.block_id, "block_id")
    _name(entry.model_version, "model_version")
    _check_text(entry.location, "location")
    if isinstance(entry.nbytes, bool) or not isinstance(entry.nbytes, int) or entry.nbytes < 0:
        raise InvalidRequestError(f"nbytes must be an int >= 0; got {entry.nbytes!r}")
    return entry


def _check_registered(conn: sa.Connection, tenant: str, wanted: list[str], *, lock: bool = False) -> None:
    """InvalidRequestError unless every id of ``wanted`` (sorted) is a registered block. ``lock``:
    hold their rows until the transaction ends (PostgreSQL's FOR KEY SHARE: a delete waits, an
    update of the token count does not)."""
    b = db.blocks.c
    known: set[str] = set()
    for chunk in chunks(wanted):
        query = sa.select(b.block_id).where(b.tenant == tenant, b.block_id.in_(chunk))
        if lock:
            query = query.with_for_update(read=True, key_share=True)
        known.update(conn.execute(query).scalars())
    missing = [i for i in wanted if i not in known]
    if missing:
        raise InvalidRequestError(
            f"cannot commit KV of {len(missing)} unregistered block(s) of tenant "
            f"{tenant!r} (first: {missing[0]}); call register_blocks first"
        )


def _kv_entry(row: EntryRow) -> KVEntry:
    return KVEntry(row.block_id, row.model_version, row.location, row.nbytes)
