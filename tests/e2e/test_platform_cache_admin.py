"""`blockrag-admin cache stats | sweep | evict` against the running platform (its local object
store under the state directory): an old orphan object is swept, a young one kept, the tenant's
bytes shown; eviction answers through the same path (a TTL nothing is older than: the session's
other tests keep their cached blocks)."""

from __future__ import annotations

import os
import time

from test_platform_cli import run

from blockrag.kvcache.entry_writer import entry_object_name
from blockrag.kvcache.index import CacheIndex
from blockrag.kvcache.key import CacheKey
from blockrag.kvcache.object_store import LocalObjectStore


def test_sweep_evict_and_stats(platform, ingested):
    store = LocalObjectStore(platform.state_dir / "kv")
    old = store.put(entry_object_name(CacheKey.of("default", "crashed-writer", [1, 2, 3])), b"o" * 2048)
    young = store.put(entry_object_name(CacheKey.of("default", "writer-going", [4])), b"y")
    two_hours_ago = time.time() - 7200
    os.utime(old.removeprefix("file://"), (two_hours_ago, two_hours_ago))

    dry = run(platform, "blockrag-admin", "cache", "sweep", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would delete 1 orphans (2.0 KiB)" in " ".join(dry.stdout.split()) and store.exists(old)
    swept = run(platform, "blockrag-admin", "cache", "sweep")
    assert "deleted 1 orphans (2.0 KiB)" in " ".join(swept.stdout.split()), swept.stdout + swept.stderr
    assert not store.exists(old) and store.exists(young)
    # every entry the ingest committed still has its object
    ids = [b for d in ingested.documents for b in d.block_ids]
    with CacheIndex.open(f"sqlite:///{platform.state_dir / 'index.db'}") as index:
        rows = index.lookup("default", ids, ingested.model_version)
    assert rows and all(r.hit and store.exists(r.location) for r in rows)

    evicted = run(platform, "blockrag-admin", "cache", "evict", "--ttl", str(10 * 365 * 86400))
    assert evicted.returncode == 0 and "Evicted 0 entries" in evicted.stdout, evicted.stdout + evicted.stderr
    stats = run(platform, "blockrag-admin", "cache", "stats", "--tenant", "default")
    assert stats.returncode == 0 and "By tenant" in stats.stdout and "default" in stats.stdout, stats.stdout
