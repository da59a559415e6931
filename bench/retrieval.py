"""Retrieval through the cache index's full-text search (CacheIndex.search, what Generate asks for
a collection question): recall of the block that holds the answer, and search latency.

Data: the project's QA set (`build_qa_set(n, seed=0, split="heldout")`): every item's five
passages become blocks of one collection, so each question searches among all items' passages
(same-kind entities with the same attributes as distractors). For each size (--blocks), items
are added until the collection holds that many distinct blocks; --questions of them (seeded
sample) are asked with k=5. recall@1 / recall@5: how often the answer passage's block is first /
among the five.

Latency (--latency backends, both by default): each question searched alone through
CacheIndex.search (SQL, driver and Python included), after one warm-up pass; p50 and p99 per
run, median of --runs runs. bench/cache_index.py measures it at scale, with longer questions.

Backends: a SQLite file under a temporary directory, and a fresh PostgreSQL database on
--postgres (user@host:port), dropped at the end. ANALYZE runs after ingest, as autovacuum would.

    .venv/bin/python bench/retrieval.py [--blocks 10000 100000] [--questions 500] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from blockrag.distill.qa_set import QAItem, build_qa_set
from blockrag.kvcache.index import CacheIndex, block_id_for

TENANT, COLLECTION, K = "bench", "qa", 5
DOCUMENT_BLOCKS = 500  # blocks registered per call (one document), to ingest quickly


def items_for(blocks: int) -> list[QAItem]:
    """Items in build order until their passages make ``blocks`` distinct blocks (the last item
    may overshoot by up to four)."""
    n = blocks // 5 + blocks // 50 + 10  # a few passages repeat across items
    items = build_qa_set(n, seed=0, split="heldout")
    seen: set[str] = set()
    for i, item in enumerate(items):
        seen.update(item.passages)
        if len(seen) >= blocks:
            return items[: i + 1]
    raise SystemExit(f"{n} items hold only {len(seen)} distinct passages; raise n")


def ingest(index: CacheIndex, items: list[QAItem]) -> int:
    texts = list(dict.fromkeys(p for item in items for p in item.passages))
    for start in range(0, len(texts), DOCUMENT_BLOCKS):
        chunk = texts[start : start + DOCUMENT_BLOCKS]
        index.register_blocks(TENANT, [(t, len(t.split())) for t in chunk], COLLECTION, f"doc{start}")
    return len(texts)


def recall(index: CacheIndex, asked: list[QAItem]) -> dict[str, float]:
    first = top5 = 0
    for item in asked:
        hits = [h.block_id for h in index.search(TENANT, COLLECTION, item.question, K)]
        answer = block_id_for(TENANT, item.passages[item.answer_passage])
        first += hits[:1] == [answer]
        top5 += answer in hits
    return {"recall@1": first / len(asked), "recall@5": top5 / len(asked)}


def latency(index: CacheIndex, asked: list[QAItem], runs: int) -> dict[str, float]:
    for item in asked:  # warm-up: caches, pool, plans
        index.search(TENANT, COLLECTION, item.question, K)
    p50s, p99s = [], []
    for _ in range(runs):
        times = []
        for item in asked:
            started = time.perf_counter()
            index.search(TENANT, COLLECTION, item.question, K)
            times.append((time.perf_counter() - started) * 1000)
        cuts = statistics.quantiles(times, n=100)
        p50s.append(cuts[49])
        p99s.append(cuts[98])
    return {"p50_ms": statistics.median(p50s), "p99_ms": statistics.median(p99s)}


def measure(url: str, backend: str, items: list[QAItem], questions: int, runs: int, timed: bool) -> dict:
    with CacheIndex.open(url) as index:
        started = time.perf_counter()
        blocks = ingest(index, items)
        ingest_s = time.perf_counter() - started
        with index.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
        asked = random.Random(0).sample(items, min(questions, len(items)))
        row = {"backend": backend, "blocks": blocks, "questions": len(asked), "ingest_s": round(ingest_s, 1)}
        row.update(recall(index, asked))
        if timed:
            row.update(latency(index, asked, runs))
        return row


def postgres_database(server: str):
    """(url, drop): a fresh database on the server and the function that drops it."""
    import psycopg
    from psycopg import sql

    name = f"blockrag_bench_{secrets.token_hex(6)}"

    def admin(statement):
        with psycopg.connect(f"postgresql://{server}/postgres", autocommit=True) as conn:
            conn.execute(statement)

    admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return (f"postgresql+psycopg://{server}/{name}",
            lambda: admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--latency", nargs="*", default=["sqlite", "postgres"], choices=["sqlite", "postgres"],
                        help="backends whose latency is measured")
    parser.add_argument("--postgres", default="postgres@127.0.0.1:5432", help="user@host:port")
    parser.add_argument("--out", type=Path, default=Path("bench/results/retrieval.json"))
    args = parser.parse_args()
    console = Console()
    rows = []
    for size in args.blocks:
        items = items_for(size)
        for backend in args.backends:
            console.print(f"{backend}: {size} blocks ...")
            if backend == "sqlite":
                with tempfile.TemporaryDirectory() as tmp:
                    rows.append(measure(f"sqlite:///{tmp}/index.db", backend, items, args.questions, args.runs,
                                        backend in args.latency))
            else:
                url, drop = postgres_database(args.postgres)
                try:
                    rows.append(measure(url, backend, items, args.questions, args.runs, backend in args.latency))
                finally:
                    drop()
            console.print(rows[-1])
    table = Table(title=f"Cache index search, k={K}, QA set held-out split")
    for column in ("backend", "blocks", "questions", "recall@1", "recall@5", "p50 ms", "p99 ms", "ingest s"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    for r in rows:
        table.add_row(r["backend"], f"{r['blocks']:,}", str(r["questions"]), f"{r['recall@1']:.3f}",
                      f"{r['recall@5']:.3f}", *(f"{r[m]:.2f}" if m in r else "-" for m in ("p50_ms", "p99_ms")),
                      f"{r['ingest_s']:.1f}")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"k": K, "runs": args.runs, "rows": rows}, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
