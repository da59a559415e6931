"""Per-tenant quotas (stored KV bytes, precompute tokens per minute) at the BlockWriter, the one
place every encode goes through: a request over a quota is refused with QuotaExceededError
(RESOURCE_EXHAUSTED on the platform) before a block is registered, encoded or stored; the rows
and objects are counted to show it. Stored bytes on SQLite and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from fixtures.postgres import fresh_database

from blockrag.errors import InvalidRequestError, QuotaExceededError
from blockrag.kvcache.compression import KVCompression
from blockrag.kvcache.index import CacheIndex
from blockrag.resolve import BlockRef, BlockResolver, BlockWriter, LocalEncoder, Quota, StoreTier, TenantQuotas
from blockrag.resolve.writer import kv_bytes_per_token

TEXTS = ["Ada Brenn signs every permit for long boats.", "Fishing boats unload at the eastern pier.",
         "A ferry to Skarvholm leaves twice a day.", "The Harbour Office of Tolvik opens at seven."]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tokens(runtime, text: str) -> int:
    return len(runtime.template.block_ids(text))


def counts(index: CacheIndex, objects) -> tuple[int, int, int]:
    """(blocks registered, entries committed, objects stored): what a refused request must not add."""
    stats = index.stats()
    return stats.blocks, stats.entries, sum(1 for p in objects.root.rglob("*") if p.is_file())


@contextlib.contextmanager
def open_index(backend: str, tmp_path):
    with contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp_path}/index.db" if backend == "sqlite" else stack.enter_context(fresh_database())
        index = CacheIndex.open(url)
        stack.callback(index.close)
        yield index


@pytest.mark.parametrize("compression", list(KVCompression))
def test_bytes_per_token_is_the_stored_payload(compression, runtime, index, objects):
    written = BlockWriter(index, objects, compression=compression).write(runtime, "t", [TEXTS[0]])[0]
    # the frame: the payload of keys and values (and per-token scales) plus a header (safetensors
    # metadata, per-head scales), under 2 KB
    payload = written.token_count * kv_bytes_per_token(runtime, compression)
    assert payload < written.nbytes < payload + 2048
    if compression is KVCompression.NONE:
        assert written.kv.nbytes == payload
    else:  # one byte per element instead of float32's four (plus scales: large next to the tiny head_dim 8)
        assert payload < written.kv.nbytes // 2


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_stored_bytes_quota_refuses_before_anything_is_written(backend, runtime, objects, tmp_path):
    with open_index(backend, tmp_path) as index:
        first = BlockWriter(index, objects).write(runtime, "acme", [TEXTS[0]])[0]
        before = counts(index, objects)
        assert before == (1, 1, 1)
        adds = tokens(runtime, TEXTS[1]) * kv_bytes_per_token(runtime)
        tight = BlockWriter(index, objects, quotas=TenantQuotas(Quota(max_stored_bytes=first.nbytes + adds - 1)))
        with pytest.raises(QuotaExceededError) as refused:
            tight.write(runtime, "acme", [TEXTS[0], TEXTS[1]])  # the stored block adds nothing
        assert str(refused.value) == (
            f"tenant 'acme' stores {first.nbytes} bytes of KV and these blocks would add about {adds}, over its "
            f"quota of {first.nbytes + adds - 1} bytes; evict entries (blockrag-admin cache evict) or ask for a "
            f"larger quota")
        assert counts(index, objects) == before  # nothing registered, encoded or stored
        # another tenant stores nothing yet: the same quota lets it write
        assert [w.computed for w in tight.write(runtime, "other", [TEXTS[1]])] == [True]
        exact = BlockWriter(index, objects, quotas=TenantQuotas(Quota(max_stored_bytes=first.nbytes + adds)))
        assert [w.computed for w in exact.write(runtime, "acme", [TEXTS[0], TEXTS[1]])] == [False, True]
        assert counts(index, objects) == (3, 3, 3)
        # at the quota now: an Ingest is refused before it segments anything
        full = TenantQuotas(Quota(max_stored_bytes=index.stats("acme").bytes))
        with pytest.raises(QuotaExceededError) as refused:
            full.check_room("acme", lambda: index.stats("acme").bytes)
        assert str(refused.value) == (
            f"tenant 'acme' stores {index.stats('acme').bytes} bytes of KV, at its quota of "
            f"{index.stats('acme').bytes} bytes: nothing more can be stored; evict entries (blockrag-admin cache "
            f"evict) or ask for a larger quota")
        full.check_room("other", lambda: index.stats("other").bytes)  # below it


def test_precompute_tokens_per_minute(runtime, index, objects):
    clock = Clock()
    n = [tokens(runtime, t) for t in TEXTS]
    quotas = TenantQuotas(Quota(max_precompute_tokens_per_minute=n[0] + n[1]), clock=clock)
    writer = BlockWriter(index, objects, quotas=quotas)
    writer.write(runtime, "acme", [TEXTS[0]])
    clock.now += 30
    writer.write(runtime, "acme", [TEXTS[1]])
    assert writer.write(runtime, "acme", [TEXTS[0]])[0].computed is False  # stored: costs no tokens
    before = counts(index, objects)
    clock.now += 10
    with pytest.raises(QuotaExceededError) as refused:
        writer.write(runtime, "acme", [TEXTS[2]])
    # the first write leaves the window 60 s after it was made, 20 s from now
    assert str(refused.value) == (
        f"tenant 'acme' had {n[0] + n[1]} tokens precomputed in the last minute and these blocks need {n[2]} more, "
        f"over its quota of {n[0] + n[1]} tokens per minute; retry in 20 s")
    assert counts(index, objects) == before
    assert writer.write(runtime, "other", [TEXTS[2]])[0].computed  # each tenant has its own window
    clock.now += 20  # the first write's tokens leave the window
    assert writer.write(runtime, "acme", [TEXTS[2]])[0].computed
    with pytest.raises(QuotaExceededError, match=f"these blocks need {n[3]} tokens of precompute, more than"):
        BlockWriter(index, objects, quotas=TenantQuotas(Quota(max_precompute_tokens_per_minute=n[3] - 1))).write(
            runtime, "acme", [TEXTS[3]])
    assert counts(index, objects) == (before[0] + 2, before[1] + 2, before[2] + 2)


def test_a_recompute_is_charged_its_tokens_and_not_the_bytes_it_replaces(runtime, index, objects):
    first = BlockWriter(index, objects).write(runtime, "acme", [TEXTS[0]])[0]
    clock = Clock()
    quotas = TenantQuotas(Quota(max_stored_bytes=first.nbytes, max_precompute_tokens_per_minute=first.token_count),
                          clock=clock)
    writer = BlockWriter(index, objects, quotas=quotas)
    assert writer.write(runtime, "acme", [TEXTS[0]], recompute=True)[0].computed  # at the bytes quota: replaces
    with pytest.raises(QuotaExceededError, match="had .* tokens precomputed in the last minute"):
        writer.write(runtime, "acme", [TEXTS[0]], recompute=True)
    assert counts(index, objects) == (1, 1, 1)


def test_the_generation_miss_path_is_refused_before_encoding(runtime, index, objects):
    """A question over new block texts: the resolver's encoder writes through the BlockWriter,
    whose quota refuses; nothing is encoded, registered or stored."""
    calls: list[list[str]] = []

    class Counting(LocalEncoder):
        async def encode(self, runtime, tenant, texts, progress=None):
            calls.append(texts)
            return await super().encode(runtime, tenant, texts, progress)

    writer = BlockWriter(index, objects, quotas=TenantQuotas(Quota(max_precompute_tokens_per_minute=5)))
    encoded: list[int] = []
    engine_encode = runtime.engine.encode_groups
    resolver = BlockResolver(Counting(writer), store=StoreTier(index, objects))
    runtime.engine.encode_groups = lambda *a, **k: encoded.append(1) or engine_encode(*a, **k)
    try:
        with pytest.raises(QuotaExceededError, match=r"more than the whole quota of tenant 'acme' \(5 tokens per minute\)"):
            asyncio.run(resolver.resolve(runtime, "acme", [BlockRef.of("acme", text=t) for t in TEXTS[:2]]))
    finally:
        del runtime.engine.encode_groups
        resolver.store.close()
    assert len(calls) == 1 and encoded == []
    assert counts(index, objects) == (0, 0, 0)  # the opening block too: refused before it


def test_quota_settings_are_checked():
    class Settings:
        def __init__(self, stored=0, rate=0, tenants=None):
            self.max_stored_bytes, self.max_precompute_tokens_per_minute, self.tenants = stored, rate, tenants

    quotas = TenantQuotas.of(Settings(100, 0, {"big": {"max_stored_bytes": 1000}}))
    assert quotas.quota("acme") == Quota(100, 0) and quotas.quota("big") == Quota(1000, 0) and quotas.active
    assert not TenantQuotas.of(Settings()).active
    with pytest.raises(InvalidRequestError, match="max_stored_bytes must be an int >= 0"):
        TenantQuotas.of(Settings(-1))
    with pytest.raises(InvalidRequestError, match="max_precompute_tokens_per_minute must be an int >= 0"):
        TenantQuotas.of(Settings(0, True))
    with pytest.raises(InvalidRequestError, match="unknown setting\\(s\\) max_bytes for tenant 'big'"):
        TenantQuotas.of(Settings(tenants={"big": {"max_bytes": 1}}))


def test_platform_config_carries_quotas():
    from blockrag_services.config import PlatformConfig, Quotas

    config = PlatformConfig.from_args({"quotas": {"max_precompute_tokens_per_minute": 600,
                                                  "tenants": {"big": {"max_stored_bytes": 10 << 30}}}})
    assert config.quotas == Quotas(0, 600, {"big": {"max_stored_bytes": 10 << 30}})
    quotas = TenantQuotas.of(config.quotas)
    assert quotas.quota("acme") == Quota(0, 600) and quotas.quota("big") == Quota(10 << 30, 600)
    assert PlatformConfig.from_args(config.to_args()) == config
    with pytest.raises(InvalidRequestError, match="unknown setting\\(s\\) max_tokens in quotas"):
        PlatformConfig.from_args({"quotas": {"max_tokens": 1}})
    with pytest.raises(InvalidRequestError, match="^quotas.max_stored_bytes: must be a whole number, got '1GB'$"):
        PlatformConfig.from_args({"quotas": {"max_stored_bytes": "1GB"}})
