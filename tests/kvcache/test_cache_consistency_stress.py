"""Writers, recomputers, an evictor, a sweeper and a reader at once, on the real SQLite and
PostgreSQL and a local store: no reader is ever sent to a missing object, and once the work
stops, one sweep leaves exactly the objects the entries name."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from kv_parts import clean, entry_objects, rows

from blockrag.kvcache.entry_writer import EntryFrame, EntryWriter
from blockrag.kvcache.eviction import EvictionPolicy, Watermarks, evict
from blockrag.kvcache.index import CacheIndex
from blockrag.kvcache.key import CacheKey
from blockrag.kvcache.object_store import LocalObjectStore
from blockrag.kvcache.sweeper import sweep_orphans

SECONDS = 3.0
BLOCKS, SIZE = 8, 1024


def test_no_entry_ever_names_a_missing_object(url: str, tmp_path: Path) -> None:
    with CacheIndex.open(url) as setup:
        clean(url)
        ids = setup.register_blocks("t", [(f"block {i}", 2) for i in range(BLOCKS)])
    store = LocalObjectStore(tmp_path / "kv")
    stop = threading.Event()
    errors: list[str] = []
    counts = {"writes": 0, "reads": 0, "evicted": 0, "swept": 0}

    def loop(body) -> None:
        with CacheIndex.open(url) as index:  # each actor a process-like pool of its own
            rng = random.Random(len(counts))
            try:
                while not stop.is_set():
                    body(index, rng)
            except Exception as e:  # noqa: BLE001 - reported by the test below
                errors.append(f"{type(e).__name__}: {e}")

    def write(index: CacheIndex, rng: random.Random) -> None:
        i = rng.randrange(BLOCKS)
        replace_before = index.now() if rng.random() < 0.5 else None  # a recompute half of the time
        frame = EntryFrame(ids[i], CacheKey.of("t", "m1", [i]), bytes([i]) * SIZE)
        EntryWriter(index, store).write("t", "m1", [frame], replace_before=replace_before)
        counts["writes"] += 1

    def read(index: CacheIndex, _: random.Random) -> None:
        for row in index.lookup("t", ids, "m1"):
            if row.hit and store.get(row.location) is None:
                # gone since the lookup? then its row must be gone too (evicted or replaced)
                again = index.lookup("t", [row.block_id], "m1")[0]
                if again.location == row.location:
                    errors.append(f"entry of {row.block_id} names a missing object {row.location}")
            counts["reads"] += 1

    def evict_some(index: CacheIndex, _: random.Random) -> None:
        policy = EvictionPolicy(tenant=Watermarks(high_bytes=4 * SIZE, low_bytes=2 * SIZE))
        counts["evicted"] += evict(index, store, policy, reader_grace_s=0).entries
        time.sleep(0.01)

    def sweep(index: CacheIndex, _: random.Random) -> None:
        counts["swept"] += sweep_orphans(index, store, grace_s=2.0).deleted
        time.sleep(0.05)

    actors = [threading.Thread(target=loop, args=(body,)) for body in (write, write, write, read, evict_some, sweep)]
    for a in actors:
        a.start()
    time.sleep(SECONDS)
    stop.set()
    for a in actors:
        a.join()
    assert errors == []
    assert counts["writes"] > 20 and counts["evicted"] > 0 and counts["reads"] > 0
    with CacheIndex.open(url) as index:
        sweep_orphans(index, store, clock=lambda: time.time() + 3600)
    assert rows(url, "kv_writes") == []
    assert sorted(entry_objects(store)) == sorted(r[2] for r in rows(url, "kv_entries"))


