"""The tenant label is bounded (issue 14, item 9): tenants with an API key or ingested documents,
or fixed, keep their name; made-up tenants from client input all land in one series, "other"."""

from __future__ import annotations

import pytest

from blockrag.auth import KeyStore, Role
from blockrag.kvcache.index import CacheIndex
from blockrag.kvcache.object_store import LocalObjectStore
from blockrag.resolve import BlockResolver, LocalEncoder, StoreTier
from blockrag.telemetry import OTHER, TenantLabels, metrics, observe_blocks, observe_prompt


def tenants(metric) -> set[str]:
    return {s.labels["tenant"] for family in metric.collect() for s in family.samples}


def test_unknown_tenants_fold_into_one_value_and_sources_refresh() -> None:
    now = [0.0]
    reads = [0]
    listed: list[set[str] | None] = [{"acme"}]

    def source():
        reads[0] += 1
        return listed[0]

    labels = TenantLabels(fixed=("default",), refresh_s=30, miss_refresh_s=1, clock=lambda: now[0])
    assert labels.label("anyone") == "anyone"  # no source: no tenant list, labels as given
    labels.set_source("keys", source)
    assert [labels.label(t) for t in ("acme", "default", "made-up-1", "")] == ["acme", "default", OTHER, OTHER]
    assert reads[0] == 1  # misses within miss_refresh_s read nothing
    listed[0] = {"acme", "globex"}
    now[0] = 1.5  # globex just ingested: its first label, a miss, reads again
    assert labels.label("globex") == "globex" and reads[0] == 2
    for i in range(100):  # a stream of made-up tenants: no read per tenant
        assert labels.label(f"made-up-{i}") == OTHER
    assert reads[0] == 2
    listed[0], now[0] = None, 40.0  # the source cannot answer: what was known stands
    assert labels.label("globex") == "globex" and reads[0] == 3
    listed[0], now[0] = {"acme"}, 80.0  # globex revoked: gone at the next refresh, even on a hit path
    assert labels.label("acme") == "acme" and labels.label("globex") == OTHER
    labels.set_source("keys", lambda: set())  # replaced, not added
    assert labels.label("acme") == OTHER
    with pytest.raises(ValueError):
        TenantLabels(refresh_s=1, miss_refresh_s=2)


def test_a_tenant_learned_at_ingest_is_named_before_the_next_read() -> None:
    # the CI flake this fixes: a label read during the Ingest (tenant not listed yet), then the
    # tenant's first ask within miss_refresh_s was counted as "other"
    now, listed = [0.0], [{"acme"}]
    labels = TenantLabels(refresh_s=30, miss_refresh_s=1, clock=lambda: now[0])
    labels.learn("ignored")  # no source: nothing to learn, every tenant is labelled as given
    labels.set_source("index", lambda: listed[0])
    assert labels.label("globex") == OTHER  # read at t=0: globex has no documents yet
    listed[0], now[0] = {"acme", "globex"}, 0.2
    assert labels.label("globex") == OTHER  # without learn: stale for up to miss_refresh_s
    labels.learn("globex")
    assert labels.label("globex") == "globex" and labels.label("initech") == OTHER
    listed[0], now[0] = {"acme"}, 31.0  # its documents gone: dropped at the next refresh
    assert labels.label("globex") == OTHER


def test_made_up_tenants_add_no_series_and_key_holders_keep_theirs(tmp_path, monkeypatch) -> None:
    labels = TenantLabels(refresh_s=0, miss_refresh_s=0)
    monkeypatch.setattr(metrics, "TENANT_LABELS", labels)
    monkeypatch.setattr("blockrag.resolve.resolver.TENANT_LABELS", labels)
    index = CacheIndex.open(f"sqlite:///{tmp_path}/index.db")
    try:
        KeyStore(index.engine).create("acme-labels", Role.READER)
        index.register_blocks("ingested-labels", [("A block of an ingested document.", 7)], "c", "d")
        revoked, _ = KeyStore(index.engine).create("gone-labels", Role.READER)
        KeyStore(index.engine).revoke(revoked.key_id)
        # a replica's resolver registers the tenants with keys as the known ones
        store = StoreTier(index, LocalObjectStore(tmp_path / "kv"), threads=1)
        BlockResolver(LocalEncoder(), store=store, service="generation")
        before = tenants(metrics.PROMPT_TOKENS) | tenants(metrics.BLOCKS)
        for i in range(10):
            observe_prompt(f"made-up-{i}", 10, 0)
            observe_blocks(f"made-up-{i}", "computed", 1, 10)
        observe_prompt("acme-labels", 10, 5)
        observe_prompt("gone-labels", 10, 5)
        observe_prompt("ingested-labels", 10, 5)
        added = (tenants(metrics.PROMPT_TOKENS) | tenants(metrics.BLOCKS)) - before
        assert added <= {OTHER, "acme-labels", "ingested-labels"} and {"acme-labels", "ingested-labels"} <= added
        assert metrics.PROMPT_TOKENS.labels(tenant="acme-labels")._value.get() == 10
        assert not any(t.startswith(("made-up", "gone")) for t in tenants(metrics.PROMPT_TOKENS))
        assert metrics.TokenStreamTimer("made-up-x").tenant == OTHER
        store.close()
    finally:
        index.close()
