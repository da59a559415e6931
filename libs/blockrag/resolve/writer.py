"""BlockWriter: block texts -> KV under one model version, encoded in batches, the frames stored
and their entries committed through an EntryWriter (the work of Precompute).

The writer hands back what it encoded (the KV and its frame), so a caller that needed the
blocks uses them at once instead of reading back what was just written.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from blockrag.attention import BlockKV
from blockrag.errors import CacheIndexError, InvalidRequestError, ObjectStoreError
from blockrag.kvcache import CacheKey, KVCodec
from blockrag.kvcache.compression import KVCompression
from blockrag.kvcache.entry_writer import EntryFrame, EntryWriter
from blockrag.kvcache.index import CacheIndex, KVEntry, block_id_for
from blockrag.kvcache.object_store import ObjectStore
from blockrag.resolve.encoder import Runtime
from blockrag.resolve.limits import ResolveLimits
from blockrag.resolve.quotas import TenantQuotas
from blockrag.telemetry import observe_precompute_batch, observe_store_unavailable

Progress = Callable[[int, int], None]  # (blocks done, blocks to encode)
log = logging.getLogger("blockrag.resolve")


@dataclass(frozen=True)
class WrittenBlock:
    block_id: str
    token_count: int
    location: str  # "" when a recompute's frame could not be stored (the object store unreachable)
    nbytes: int
    computed: bool  # encoded by this call (else it was stored already)
    kv: BlockKV | None = None  # set when computed
    frame: bytes | None = None  # the stored bytes (KVCodec), set when computed


@dataclass(frozen=True)
class WritePlan:
    """Distinct texts in order, their token ids and block ids; what is stored already."""

    texts: list[str]
    token_ids: list[list[int]]
    block_ids: list[str]
    stored: dict[int, tuple[str, int]]  # position -> (location, nbytes) of entries kept
    replace_before: float | None = None  # recompute: replace entries committed before the plan
    registered: tuple[str, ...] = ()  # block ids this plan registered (unknown before it)
    # while the plan's write runs: its blocks' claims and its bytes hold (CacheIndex.end_plan);
    # None when there is nothing to encode
    plan_id: str | None = None

    @property
    def to_encode(self) -> list[int]:
        return [i for i in range(len(self.texts)) if i not in self.stored]


def kv_bytes_per_token(runtime: Runtime, compression: KVCompression = KVCompression.NONE) -> int:
    """Keys and values of one token over every layer, as a frame of ``compression`` stores them:
    what a stored entry costs per token (its frame adds a header of a few hundred bytes, and
    per-head scales)."""
    engine = runtime.engine
    # keys, values: [layers, kv_heads, tokens, head_dim] each; compressed: one byte per element
    element = engine.dtype.itemsize if compression is KVCompression.NONE else 1
    scales = 2 * engine.num_layers * engine.num_kv_heads * 4 if compression.per_token else 0  # float32 per token
    return 2 * engine.num_layers * engine.num_kv_heads * engine.head_dim * element + scales


class BlockWriter:
    def __init__(self, index: CacheIndex, store: ObjectStore, limits: ResolveLimits = ResolveLimits(),
                 batch_tokens: int = 2048, quotas: TenantQuotas | None = None,
                 compression: KVCompression = KVCompression.NONE):
        """``batch_tokens``: real tokens per encoded group (progress, metrics and writes follow
        each group); ``quotas``: per-tenant quotas checked by ``plan`` (None: none);
        ``compression``: how the frames hold their KV (the deployment's setting)."""
        self.index, self.store, self.limits, self.batch_tokens = index, store, limits, batch_tokens
        self.quotas = quotas or TenantQuotas()
        self.entries = EntryWriter(index, store)
        self.compression = KVCompression.parse(compression)

    def write(self, runtime: Runtime, tenant: str, texts: Sequence[str], *, recompute: bool = False,
              progress: Progress | None = None) -> list[WrittenBlock]:
        """``plan`` then ``encode``: one WrittenBlock per distinct text, in order."""
        return self.encode(runtime, tenant, self.plan(runtime, tenant, texts, recompute=recompute), progress)

    def plan(self, runtime: Runtime, tenant: str, texts: Sequence[str], *, recompute: bool = False) -> WritePlan:
        """Check and register the blocks (no device work). Without ``recompute``, blocks already
        stored for the version are kept; with it every text is encoded and replaces the entry stored before this plan
        (the caller found the stored one missing or corrupt). LimitExceededError (a block over
        the token limit) and QuotaExceededError (the tenant's quotas) come before the blocks are
        registered: a refused plan writes nothing.

        A plan with blocks to encode claims its blocks (and holds the bytes its quota admitted)
        until ``encode`` ends: another writer's failed write cannot forget them meanwhile. A plan
        never encoded keeps them until the orphan sweep expires the claims (and the hold lapses)."""
        distinct = list(dict.fromkeys(t.strip() for t in texts))
        if not distinct or not all(distinct):
            raise InvalidRequestError("texts must be non-empty strings (at least one)")
        ids = [runtime.template.block_ids(t) for t in distinct]
        self.limits.check_block_tokens([len(i) for i in ids])
        # limits and quotas before anything is registered, encoded or stored
        block_ids = [block_id_for(tenant, t) for t in distinct]
        stored: dict[int, tuple[str, int]] = {}
        replaced = 0  # bytes of the entries a recompute replaces
        new: tuple[str, ...] = ()  # a recompute's blocks are known: it never forgets any
        if not recompute or self.quotas.active:
            rows = self.index.lookup(tenant, block_ids, runtime.version)
            hits = {i: (r.location, r.nbytes) for i, r in enumerate(rows) if r.hit}
            stored, replaced = ({}, sum(n for _, n in hits.values())) if recompute else (hits, 0)
            new = () if recompute else tuple(r.block_id for r in rows if not r.known)
        tokens = sum(len(ids[i]) for i in range(len(distinct)) if i not in stored)
        plan_id = "pln_" + secrets.token_hex(8) if len(stored) < len(distinct) else None
        self.quotas.admit(tenant, tokens, max(tokens * kv_bytes_per_token(runtime, self.compression) - replaced, 0),
                          self.index, plan_id)
        try:
            registered = self.index.register_blocks(tenant, [(t, len(i)) for t, i in zip(distinct, ids)],
                                                    plan=plan_id)
        except Exception as e:
            if plan_id is not None:  # the bytes the admission held; an index that cannot: they lapse
                try:
                    self.index.end_plan(plan_id)
                except CacheIndexError as cleanup:
                    e.add_note(f"the bytes its quota held were not released (they lapse): {cleanup}")
            raise
        if registered != block_ids:  # one derivation of ids (kvcache.index.block_id_for): never expected
            raise RuntimeError("the cache index registered other block ids than block_id_for derives")
        return WritePlan(distinct, ids, block_ids, stored, replace_before=self.index.now() if recompute else None,
                         registered=new, plan_id=plan_id)

    def encode(self, runtime: Runtime, tenant: str, plan: WritePlan,
               progress: Progress | None = None) -> list[WrittenBlock]:
        """Encode what the plan lacks, in groups, then store the frames and commit their entries
        (EntryWriter: crash-safe, and a block another writer stored meanwhile keeps its entry).
        A write that fails (the object store unreachable, the device) commits nothing and forgets
        the blocks its plan registered: a failed ingest leaves no block text a reader can find.
        Either way the plan's claims and bytes hold end (its entries now count, or nothing)."""
        try:
            written = self._encode(runtime, tenant, plan, progress)
        except Exception as e:
            if plan.registered or plan.plan_id is not None:
                self._forget(tenant, plan, e)
            raise
        if plan.plan_id is not None:
            self._end(plan.plan_id)
        return written

    def abandon(self, tenant: str, plan: WritePlan) -> None:
        """A plan that will not be encoded (its caller went away before its turn on the device):
        the blocks it registered are forgotten and its claims and bytes hold released now, as after
        a failed write, instead of holding the tenant's quota until they expire."""
        if plan.registered or plan.plan_id is not None:
            error = RuntimeError(f"write plan {plan.plan_id} abandoned")
            self._forget(tenant, plan, error)
            for note in getattr(error, "__notes__", ()):
                log.warning("write plan %s, abandoned by its caller: %s", plan.plan_id, note)

    def _end(self, plan_id: str) -> None:
        # The write committed: an index that cannot release the claims and hold now must not turn
        # it into a failure the client would retry. What stays lapses (the hold) or is expired by
        # the orphan sweep (the claims), as after a crash; until then the hold counts its bytes twice
        try:
            self.index.end_plan(plan_id)
        except CacheIndexError as e:
            log.warning("write plan %s not ended (its claims and bytes hold stay until they expire): %s", plan_id, e)

    def _forget(self, tenant: str, plan: WritePlan, error: Exception) -> None:
        # Blocks another writer uses meanwhile (its document, entry or write in flight) stay
        # (CacheIndex.forget_blocks). The write's own error is what the caller gets: an index
        # that cannot forget now is noted on it (the rows stay, unused, as after a crash)
        try:
            self.index.forget_blocks(tenant, plan.registered, plan=plan.plan_id)
        except CacheIndexError as cleanup:
            error.add_note(f"the {len(plan.registered)} block(s) it registered were not forgotten, nor its plan's "
                           f"claims and quota hold released (they expire): {cleanup}")

    def _encode(self, runtime: Runtime, tenant: str, plan: WritePlan, progress: Progress | None) -> list[WrittenBlock]:
        version, todo = runtime.version, plan.to_encode
        encoded: list[tuple[BlockKV, bytes]] = []  # in todo order
        started = time.perf_counter()
        blocks = [plan.token_ids[i] for i in todo]
        for group, kvs in runtime.engine.encode_groups(blocks, self.batch_tokens):
            observe_precompute_batch(sum(map(len, group)), time.perf_counter() - started)
            # each frame names the tenant and block it is for, so a reader pointed elsewhere refuses it
            for kv in kvs:
                block_id = plan.block_ids[todo[len(encoded)]]
                encoded.append((kv, KVCodec.encode(kv, version, tenant=tenant, block_id=block_id,
                                                   compression=self.compression)))
            if progress is not None:
                progress(len(encoded), len(todo))
            started = time.perf_counter()
        frames = [EntryFrame(plan.block_ids[i], CacheKey.of(tenant, version, kv.token_ids), frame)
                  for i, (kv, frame) in zip(todo, encoded)]
        entries = self._store(tenant, version, frames, plan) if frames else []
        out = {i: WrittenBlock(plan.block_ids[i], kv.num_tokens, e.location, e.nbytes, True, kv, frame)
               for i, (kv, frame), e in zip(todo, encoded, entries)}
        out.update({i: WrittenBlock(plan.block_ids[i], len(plan.token_ids[i]), loc, n, False)
                    for i, (loc, n) in plan.stored.items()})
        return [out[i] for i in range(len(plan.texts))]

    def _store(self, tenant: str, version: str, frames: list[EntryFrame], plan: WritePlan) -> list[KVEntry]:
        """The frames' entries in effect. A recompute's caller needs the KV now (a question is
        waiting on it), so an object store that cannot take the frames fails only the keeping:
        the KV is answered with no location (nothing committed: the index keeps what it listed,
        and the next reader after the outage finds it or recomputes). Any other write raises
        ObjectStoreError (UNAVAILABLE): an ingest must not report blocks stored that are not."""
        try:
            return self.entries.write(tenant, version, frames, replace_before=plan.replace_before)
        except ObjectStoreError as e:
            if plan.replace_before is None:
                raise
            observe_store_unavailable("write", len(frames))
            log.warning("object store unreachable: %d recomputed block(s) of tenant %r answered but not stored: %s",
                        len(frames), tenant, e)
            return [KVEntry(f.block_id, version, "", len(f.frame)) for f in frames]
