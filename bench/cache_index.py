"""The cache index's data path at scale: Search (CacheIndex.search, what Generate asks for a
collection question) over a collection of 10,000 and 100,000 blocks, and Lookup of 64 block ids
(CacheIndex.lookup, what Generate asks before reading KV), on SQLite and PostgreSQL.

Targets (issue 11): Search over 100,000 blocks at most 20 ms p99, growing no more than 2x from
10,000 to 100,000 blocks; Lookup of 64 ids at most 5 ms p99 on PostgreSQL.

Data: the QA set's held-out passages (`bench/retrieval.py`: each item's five passages become
blocks of one collection, items added until the collection holds --blocks distinct blocks).
Queries: --questions items' questions (seeded sample), phrased as a user asks: about half of them
behind a lead-in of common words ("According to the documents, ..."), so they run from 5 to 12
words: stop words, words in most blocks ("town", "company", "founded") and rare ones (names).
Lookup: 64 ids drawn from the collection per call, a tenth of the collection's blocks holding a
KV entry for the model version asked.

Each query and lookup runs alone through CacheIndex (SQL, driver and Python included), after a
warm-up pass; p50 and p99 per run, median of --runs runs. The sizes' runs take turns, so other
work on the machine slows each alike. "best of runs": p50 and p99 over the calls of each call's
fastest run, which leaves out most of what other processes cost it on a shared machine (its own
cost, as on a quiet one). ANALYZE runs after ingest, as
autovacuum would. Backends: a SQLite file under a temporary directory; a fresh PostgreSQL
database on --postgres (user@host:port), dropped at the end.

    .venv/bin/python bench/cache_index.py [--blocks 10000 100000] [--questions 300] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from blockrag.kvcache.index import CacheIndex, KVEntry, block_id_for
from retrieval import COLLECTION, TENANT, K, ingest, items_for, postgres_database
from rich.console import Console
from rich.table import Table

LOOKUP_IDS = 64
MODEL_VERSION = "mv_bench"
# Lead-ins a user puts before the question: common words only, none a name.
LEADS = ("According to the documents,", "Tell me please:", "I would like to know:",
         "From the records we have,", "Quick question about the town and company files:",
         "Can you check the notes and say")


def queries(items: list, n: int) -> list[str]:
    """``n`` questions of 5 to 12 words: the items' own, about half behind a lead-in."""
    rng = random.Random(1)
    out = []
    for item in rng.sample(items, min(n, len(items))):
        question = item.question
        words = len(question.split())
        leads = [lead for lead in LEADS if 5 <= words + len(lead.split()) <= 12]
        if words < 5 or (leads and rng.random() < 0.5):
            question = f"{rng.choice(leads)} {question[0].lower()}{question[1:]}"
        out.append(question)
    return out


def timed(calls: list) -> list[float]:
    """ms of each zero-argument call, each alone, in one pass."""
    times = []
    for call in calls:
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def percentiles(times: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(times, n=100)
    return cuts[49], cuts[98]


def prepare(url: str, items: list, questions: list[str]) -> tuple[CacheIndex, dict, list, list]:
    """Open ``url``, ingest ``items`` and store KV entries for a tenth of the blocks; the index,
    its row of figures and the search and lookup calls to time."""
    index = CacheIndex.open(url)
    started = time.perf_counter()
    blocks = ingest(index, items)
    ingest_s = time.perf_counter() - started
    ids = [block_id_for(TENANT, t) for t in dict.fromkeys(p for item in items for p in item.passages)]
    stored = random.Random(2).sample(ids, len(ids) // 10)
    for start in range(0, len(stored), 1000):
        index.commit_entries(TENANT, [KVEntry(b, MODEL_VERSION, f"bench/{b}", 1000)
                                      for b in stored[start : start + 1000]])
    with index.engine.begin() as conn:
        conn.execute(sa.text("ANALYZE"))
    search = [lambda q=q: index.search(TENANT, COLLECTION, q, K) for q in questions]
    rng = random.Random(3)
    asked = [rng.sample(ids, LOOKUP_IDS) for _ in questions]
    lookup = [lambda b=b: index.lookup(TENANT, b, MODEL_VERSION) for b in asked]
    return index, {"blocks": blocks, "queries": len(questions), "ingest_s": round(ingest_s, 1)}, search, lookup


def measure(backend: str, urls: list[str], sizes: list[int], runs: int, questions: int) -> list[dict]:
    """Rows for every size of one backend. The sizes' runs take turns (run 1 of each size, then
    run 2, ...), so a machine busy with other work slows each size alike."""
    prepared = []
    try:
        for url, size in zip(urls, sizes):
            items = items_for(size)
            prepared.append(prepare(url, items, queries(items, questions)))
        timings = [{"search": [], "lookup": []} for _ in prepared]
        for _, _, search, lookup in prepared:  # warm-up: caches, pool, prepared plans
            for call in search + lookup:
                call()
        for _ in range(runs):
            for timing, (_, _, search, lookup) in zip(timings, prepared):
                timing["search"].append(timed(search))
                timing["lookup"].append(timed(lookup))
        rows = []
        for timing, (_, row, _, _) in zip(timings, prepared):
            row = {"backend": backend, **row}
            for what, passes in timing.items():
                per_run = [percentiles(times) for times in passes]
                best = percentiles([min(call) for call in zip(*passes)])
                for i, name in ((0, "p50_ms"), (1, "p99_ms")):
                    row[f"{what}_{name}"] = round(statistics.median(r[i] for r in per_run), 3)
                    row[f"{what}_best_{name}"] = round(best[i], 3)
            rows.append(row)
        return rows
    finally:
        for index, *_ in prepared:
            index.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--postgres", default="postgres@127.0.0.1:5432", help="user@host:port")
    parser.add_argument("--out", type=Path, default=Path("bench/results/cache_index.json"))
    args = parser.parse_args()
    console = Console()
    rows = []
    load = [round(x, 2) for x in os.getloadavg()]
    for backend in args.backends:
        console.print(f"{backend}: {', '.join(f'{size:,}' for size in args.blocks)} blocks ...")
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                urls = [f"sqlite:///{tmp}/index{size}.db" for size in args.blocks]
                rows += measure(backend, urls, args.blocks, args.runs, args.questions)
        else:
            databases = []
            try:
                for _ in args.blocks:
                    databases.append(postgres_database(args.postgres))
                rows += measure(backend, [url for url, _ in databases], args.blocks, args.runs, args.questions)
            finally:
                for _, drop in databases:
                    drop()
        for row in rows[-len(args.blocks):]:
            console.print(row)
    load = [load, [round(x, 2) for x in os.getloadavg()]]
    table = Table(title=f"Cache index: Search (k={K}) and Lookup ({LOOKUP_IDS} ids), ms")
    for column in ("backend", "blocks", "search p50", "search p99", "growth p50/p99", "best-of-runs search p50/p99",
                   "lookup p50", "lookup p99", "best-of-runs lookup p50/p99"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    smallest = {}
    for r in rows:
        smallest.setdefault(r["backend"], r)
        base = smallest[r["backend"]]
        growth = "" if base is r else (f"{r['search_p50_ms'] / base['search_p50_ms']:.2f}x / "
                                       f"{r['search_p99_ms'] / base['search_p99_ms']:.2f}x")
        table.add_row(r["backend"], f"{r['blocks']:,}", f"{r['search_p50_ms']:.2f}", f"{r['search_p99_ms']:.2f}",
                      growth, f"{r['search_best_p50_ms']:.2f} / {r['search_best_p99_ms']:.2f}",
                      f"{r['lookup_p50_ms']:.2f}", f"{r['lookup_p99_ms']:.2f}",
                      f"{r['lookup_best_p50_ms']:.2f} / {r['lookup_best_p99_ms']:.2f}")
    console.print(table)
    console.print(f"load average (1, 5, 15 min) before and after: {load}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"k": K, "lookup_ids": LOOKUP_IDS, "runs": args.runs,
                                          "load_before_after": load, "rows": rows}, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
