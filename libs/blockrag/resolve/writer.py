"""BlockWriter: block texts -> KV under one model version, encoded in batches, each frame written
to the object store and its entry committed to the cache index (the work of Precompute).

The writer hands back what it encoded (the KV and its frame), so a caller that needed the
blocks uses them at once instead of reading back what was just written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from blockrag.attention import BlockKV
from blockrag.errors import InvalidRequestError
from blockrag.kvcache import CacheKey, KVCodec
from blockrag.kvcache.index import CacheIndex, KVEntry
from blockrag.kvcache.object_store import ObjectStore
from blockrag.resolve.encoder import Runtime
from blockrag.resolve.limits import ResolveLimits
from blockrag.telemetry import observe_precompute_batch

Progress = Callable[[int, int], None]  # (blocks done, blocks to encode)


@dataclass(frozen=True)
class WrittenBlock:
    block_id: str
    token_count: int
    location: str
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

    @property
    def to_encode(self) -> list[int]:
        return [i for i in range(len(self.texts)) if i not in self.stored]


class BlockWriter:
    def __init__(self, index: CacheIndex, store: ObjectStore, limits: ResolveLimits = ResolveLimits(),
                 batch_tokens: int = 2048):
        """``batch_tokens``: real tokens per encoded group (progress, metrics and writes follow
        each group)."""
        self.index, self.store, self.limits, self.batch_tokens = index, store, limits, batch_tokens

    def write(self, runtime: Runtime, tenant: str, texts: Sequence[str], *, recompute: bool = False,
              progress: Progress | None = None) -> list[WrittenBlock]:
        """``plan`` then ``encode``: one WrittenBlock per distinct text, in order."""
        return self.encode(runtime, tenant, self.plan(runtime, tenant, texts, recompute=recompute), progress)

    def plan(self, runtime: Runtime, tenant: str, texts: Sequence[str], *, recompute: bool = False) -> WritePlan:
        """Check and register the blocks (no device work). Without ``recompute``, blocks already
        stored for the version are kept; with it every text is encoded and its entry replaced
        (the caller found the stored one missing or corrupt)."""
        distinct = list(dict.fromkeys(t.strip() for t in texts))
        if not distinct or not all(distinct):
            raise InvalidRequestError("texts must be non-empty strings (at least one)")
        ids = [runtime.template.block_ids(t) for t in distinct]
        self.limits.check_block_tokens([len(i) for i in ids])
        block_ids = self.index.register_blocks(tenant, [(t, len(i)) for t, i in zip(distinct, ids)])
        stored: dict[int, tuple[str, int]] = {}
        if not recompute:
            rows = self.index.lookup(tenant, block_ids, runtime.version)
            stored = {i: (r.location, r.nbytes) for i, r in enumerate(rows) if r.hit}
        return WritePlan(distinct, ids, block_ids, stored)

    def encode(self, runtime: Runtime, tenant: str, plan: WritePlan,
               progress: Progress | None = None) -> list[WrittenBlock]:
        """Encode what the plan lacks, in groups; write each frame, then commit the entries
        (objects first: an entry never names an object not yet written)."""
        version, todo = runtime.version, plan.to_encode
        computed: list[WrittenBlock] = []
        started = time.perf_counter()
        blocks = [plan.token_ids[i] for i in todo]
        for group, kvs in runtime.engine.encode_groups(blocks, self.batch_tokens):
            observe_precompute_batch(sum(map(len, group)), time.perf_counter() - started)
            for kv in kvs:
                i = todo[len(computed)]
                frame = KVCodec.encode(kv, version)
                location = self.store.put(CacheKey.of(tenant, version, kv.token_ids).hex, frame)
                computed.append(WrittenBlock(plan.block_ids[i], kv.num_tokens, location, len(frame), True, kv, frame))
            if progress is not None:
                progress(len(computed), len(todo))
            started = time.perf_counter()
        if computed:
            self.index.commit_entries(tenant, [KVEntry(w.block_id, version, w.location, w.nbytes) for w in computed])
        out = dict(zip(todo, computed))
        out.update({i: WrittenBlock(plan.block_ids[i], len(plan.token_ids[i]), loc, n, False)
                    for i, (loc, n) in plan.stored.items()})
        return [out[i] for i in range(len(plan.texts))]
