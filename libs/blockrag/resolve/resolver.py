"""BlockResolver: the KV of a request's context blocks, from the nearest tier that has it.

    memory (this process's tiers of decoded blocks, each bounded in bytes: GPU memory then
            pinned host memory on a GPU replica, host memory on a CPU one; kvcache/tiers.py)
      -> store (the cache index says where each entry lives; the objects are fetched
         concurrently, checksum, model fingerprint, tenant and block id verified; hits counted off the path)
      -> encoder (ONE call for every block still missing; its answer carries the KV)

The local pipeline (`blockrag local-ask`) and the platform's generation replicas both resolve
through this class; they differ only in their parts (a store or none, an in-process encoder or
Precompute). Limits, usage accounting and metrics live here, once.

Every call names the runtime (the model version) its request captured: entries of all versions
share the memory tier, keyed by version, so a switch of version never serves one version's KV to
another. A corrupt or foreign entry is a miss: recomputed, and the encoder's write replaces it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence

from blockrag.attention import BlockKV
from blockrag.engine_lock import locked_in_thread
from blockrag.errors import NotFoundError
from blockrag.kvcache import CacheKey
from blockrag.kvcache.index import DEFAULT_TENANT, LookupRow
from blockrag.kvcache.memory_tier import ByteLRU
from blockrag.kvcache.tiers import MemoryTiers
from blockrag.resolve.block_ref import TIERS, BlockRef, Resolution, ResolvedBlock, Tier
from blockrag.resolve.encoder import BlockEncoder, Progress, Runtime
from blockrag.resolve.limits import ResolveLimits
from blockrag.resolve.store_tier import StoreTier
from blockrag.telemetry import (TENANT_LABELS, observe_blocks, observe_prompt, set_replica_cache,
                                set_replica_tier_lookups)

MAX_PREFIXES = 4  # model versions whose opening block stays pinned (a replica serves a few)


class BlockResolver:
    def __init__(self, encoder: BlockEncoder, *, store: StoreTier | None = None,
                 memory: ByteLRU | MemoryTiers | None = None,
                 limits: ResolveLimits = ResolveLimits(), engine_lock: asyncio.Lock | None = None,
                 service: str | None = None, exact_first_passage: bool = True):
        """``store``: None keeps nothing between processes (every miss is encoded);
        ``memory``: None keeps nothing in this process either; ``engine_lock``: held while this
        process's engine encodes the prompt's opening block (shared with the decoder);
        ``service``: the metrics' service label, None to record no metrics (one-shot CLIs);
        ``exact_first_passage``: on an engine with a shared opening, the first context block is
        read as full attention reads it (`_lead`)."""
        self.encoder, self.store, self.limits, self.service = encoder, store, limits, service
        self.exact_first_passage = exact_first_passage
        self.memory: ByteLRU | MemoryTiers = memory if memory is not None else ByteLRU(0)
        self.engine_lock = engine_lock or asyncio.Lock()
        self._prefixes: OrderedDict[str, BlockKV] = OrderedDict()  # version -> opening block
        if service is not None and store is not None:
            # the metrics' tenant label: tenants with a key or documents keep their name, the rest
            # fold into one value (TenantLabels)
            TENANT_LABELS.set_source("cache_index", store.known_tenants)

    async def resolve(self, runtime: Runtime, tenant: str, refs: Sequence[BlockRef], *, question_tokens: int = 0,
                      progress: Progress | None = None) -> Resolution:
        """The opening block and the KV of every ref under ``runtime``'s version, in ref order.

        NotFoundError for an id the index does not know (and no text to encode); LimitExceededError
        past a limit (blocks, block tokens, question and context tokens), checked on the counts the
        index and the request give before anything is fetched or encoded, and on the KV itself
        after. ``progress(done, total)`` as missing blocks are encoded, where the encoder reports it."""
        self.limits.check_blocks(len(refs))
        self.limits.check_question(question_tokens)
        version = runtime.version
        found: dict[str, ResolvedBlock] = {}
        for ref in refs:
            kv = self.memory.get((tenant, ref.block_id, version))
            if kv is not None:
                found[ref.block_id] = ResolvedBlock(ref.block_id, kv, "memory")
        rest = list({r.block_id: r for r in refs if r.block_id not in found}.values())
        texts = {r.block_id: r.text for r in rest if r.text}
        rows: dict[str, LookupRow] = {}
        if self.store is not None and rest:
            listed = await asyncio.to_thread(self.store.lookup, tenant, [r.block_id for r in rest], version)
            rows = {row.block_id: row for row in listed if row.known}
        self._check_known(tenant, [r.block_id for r in rest if r.block_id not in rows and r.block_id not in texts])
        self._check_context(runtime, refs, found, rows, texts, question_tokens)
        corrupt = 0
        if self.store is not None:
            if found:  # memory hits are accesses of the stored entries too (eviction order, warming)
                self.store.access.record(tenant, version, found)
            if rest:
                corrupt = await self._from_store(self.store, runtime, tenant, rest, list(rows.values()), texts, found)
        missing = [r.block_id for r in rest if r.block_id not in found]
        encode_seconds = 0.0
        if missing:
            started = time.perf_counter()
            kvs = await self.encoder.encode(runtime, tenant, [texts[b] for b in missing], progress)
            encode_seconds = time.perf_counter() - started
            for block_id, kv in zip(missing, kvs):
                found[block_id] = ResolvedBlock(block_id, kv, "computed")
        for block in found.values():
            if block.tier != "memory":
                self.memory.put((tenant, block.block_id, version), block.kv, block.kv.nbytes)
        blocks = [found[r.block_id] for r in refs]
        lead_computed = False
        if blocks:
            blocks[0], lead_computed = await self._lead(runtime, tenant, blocks[0])
        resolution = Resolution(await self.prefix(runtime), blocks, corrupt, encode_seconds, lead_computed)
        # the KV's own counts: equal to the checked ones unless the index's token counts are wrong
        self.limits.check_prompt(resolution.context_tokens, question_tokens)
        self._observe(tenant, resolution, question_tokens)
        return resolution

    async def prefix(self, runtime: Runtime) -> ResolvedBlock:
        """The prompt's opening block (the system message) under the runtime's version: pinned in
        this process, else from the store by its cache key, else encoded here (and stored)."""
        version = runtime.version
        kv = self._prefixes.get(version)
        if kv is not None:
            self._prefixes.move_to_end(version)
            return ResolvedBlock("prefix", kv, "memory")
        ids = runtime.template.prefix_ids()
        key = CacheKey.of(DEFAULT_TENANT, version, ids)  # one opening for every tenant: no tenant data
        device = runtime.engine.device
        kv = await asyncio.to_thread(self.store.get_named, key, version, device) if self.store else None
        tier: Tier = "store"
        if kv is None:
            tier = "computed"
            kv = await locked_in_thread(self.engine_lock, runtime.engine.encode_block, ids)
            if self.store is not None:
                await asyncio.to_thread(self.store.put_named, key, kv, version)
        self._prefixes[version] = kv
        while len(self._prefixes) > MAX_PREFIXES:
            self._prefixes.popitem(last=False)
        return ResolvedBlock("prefix", kv, tier)

    async def _lead(self, runtime: Runtime, tenant: str, block: ResolvedBlock) -> tuple[ResolvedBlock, bool]:
        """The first context block as full attention reads it, right after the opening
        (engine.encode_lead), where every cached block was encoded `gap` positions after it:
        on the shipped adapter it gave 64 right answers of 170 held-out questions against 54
        (bench/gpu/DISTILLATION.md, "The first passage read exactly"). It costs one block's
        forward here, in this process, the first time a block comes first; then it is kept in
        memory beside the block's cached form, under its own key (the two are not
        interchangeable: the lead form is right only straight after the opening). Returns the
        block with its lead KV (its tier that of its cached form) and whether the lead form was
        computed now."""
        engine = runtime.engine
        if engine.opening is None or not self.exact_first_passage:
            return block, False
        key = (tenant, block.block_id, runtime.version, "lead")
        kv = self.memory.get(key)
        if kv is None:
            kv = await locked_in_thread(self.engine_lock, engine.encode_lead, block.kv.token_ids)
            self.memory.put(key, kv, kv.nbytes)
            return ResolvedBlock(block.block_id, kv, block.tier), True
        return ResolvedBlock(block.block_id, kv, block.tier), False

    def _check_context(self, runtime: Runtime, refs: Sequence[BlockRef], found: dict[str, ResolvedBlock],
                       rows: dict[str, LookupRow], texts: dict[str, str], question_tokens: int) -> None:
        """The prompt's tokens as known before any work: the opening block, each ref (repeats
        too) by its KV in memory, its index row or its text tokenized here, and the question."""
        template = runtime.template
        new = {b: len(template.block_ids(t)) for b, t in texts.items() if b not in rows and b not in found}
        self.limits.check_block_tokens(list(new.values()))
        known = {**new, **{b: row.token_count for b, row in rows.items()}, **{b: r.tokens for b, r in found.items()}}
        prefix = self._prefixes.get(runtime.version)
        opening = prefix.num_tokens if prefix is not None else len(template.prefix_ids())
        self.limits.check_prompt(opening + sum(known[r.block_id] for r in refs), question_tokens)

    async def _from_store(self, store: StoreTier, runtime: Runtime, tenant: str, refs: list[BlockRef],
                          rows: list[LookupRow], texts: dict[str, str], found: dict[str, ResolvedBlock]) -> int:
        """Fetch the stored refs (their known ``rows``) into ``found``, fill ``texts`` for the
        rest; how many stored entries were corrupt."""
        version = runtime.version
        fetched = await asyncio.to_thread(store.fetch, tenant, rows, version, runtime.engine.device)
        for block_id, kv in fetched.kvs.items():
            found[block_id] = ResolvedBlock(block_id, kv, "store")
        if fetched.kvs:
            store.access.record(tenant, version, fetched.kvs)
        need = [r.block_id for r in refs if r.block_id not in found and r.block_id not in texts]
        if need:  # ingested blocks whose KV is gone (evicted, another version): their text, here
            texts.update(await asyncio.to_thread(store.texts, tenant, need))
        return len(fetched.corrupt)

    @staticmethod
    def _check_known(tenant: str, unknown: list[str]) -> None:
        if unknown:
            raise NotFoundError(
                f"unknown block id(s) {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} for tenant "
                f"{tenant!r}: ingest the documents first (Ingest returns block ids) or pass the block text")

    def _observe(self, tenant: str, resolution: Resolution, question_tokens: int) -> None:
        if self.service is None:
            return
        tiers = resolution.tiers()
        for tier in TIERS:
            observe_blocks(tenant, tier, tiers.get(tier, 0), resolution.tier_tokens(tier))
        prompt = resolution.context_tokens + question_tokens
        observe_prompt(tenant, prompt, resolution.context_tokens - resolution.computed_tokens)
        stats = self.memory.stats()
        set_replica_cache(self.service, stats.bytes, stats.entries, stats.evictions)
        if isinstance(self.memory, MemoryTiers):  # a lone ByteLRU's counts are the stats above
            set_replica_tier_lookups(self.service, {name: (tier.hits, tier.misses)
                                                    for name, tier in self.memory.tier_stats().items()})
