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
run, median of --runs runs. The sizes' indexes are open together and their runs take turns, so
other work on the machine slows each size alike. "best": p50 and p99 over each question's fastest run, what a search
costs with most of the other work on the machine left out. The same for the questions naming
nothing ("vague": each question without its capitalised words past the first, e.g. "Which dish
is the famous for?"), whose least common word selects a share of the collection: the case that
index_search.MAX_RANKED bounds. bench/cache_index.py measures it at scale, with longer questions.

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
from contextlib import ExitStack
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


def vague(question: str) -> str:
    """The question without its capitalised words past the first: it names nothing."""
    first, *rest = question.split()
    return " ".join([first, *(w for w in rest if not w[:1].isupper())])


class Timings:
    """Each question's time in each run of one set of questions against one index."""

    def __init__(self, index: CacheIndex, questions: list[str]) -> None:
        self.index, self.questions, self.runs = index, questions, []

    def warm_up(self) -> None:  # caches, pool, plans
        for question in self.questions:
            self.index.search(TENANT, COLLECTION, question, K)

    def run(self) -> None:
        times = []
        for question in self.questions:
            started = time.perf_counter()
            self.index.search(TENANT, COLLECTION, question, K)
            times.append((time.perf_counter() - started) * 1000)
        self.runs.append(times)

    def figures(self, prefix: str = "") -> dict[str, float]:
        """p50 and p99 of each run, medians over runs; and over each question's fastest run."""
        cuts = [statistics.quantiles(times, n=100) for times in self.runs]
        best = statistics.quantiles([min(times) for times in zip(*self.runs)], n=100)
        return {f"{prefix}p50_ms": statistics.median(c[49] for c in cuts),
                f"{prefix}p99_ms": statistics.median(c[98] for c in cuts),
                f"{prefix}best_p50_ms": best[49], f"{prefix}best_p99_ms": best[98]}


def prepare(index: CacheIndex, backend: str, items: list[QAItem], questions: int) -> tuple[dict, list[QAItem]]:
    """Ingest, ANALYZE, recall: the row of one size, and the questions asked."""
    started = time.perf_counter()
    blocks = ingest(index, items)
    ingest_s = time.perf_counter() - started
    with index.engine.begin() as conn:
        conn.execute(sa.text("ANALYZE"))
    asked = random.Random(0).sample(items, min(questions, len(items)))
    row = {"backend": backend, "blocks": blocks, "questions": len(asked), "ingest_s": round(ingest_s, 1)}
    row.update(recall(index, asked))
    return row, asked


def measure(backend: str, urls: list[str], sizes: list[int], questions: int, runs: int, timed: bool,
            console: Console) -> list[dict]:
    """Every size of one backend, its indexes open together: the sizes' runs take turns, so other
    work on the machine slows each alike."""
    with ExitStack() as stack:
        rows, timings = [], []
        for url, size in zip(urls, sizes):
            console.print(f"{backend}: {size} blocks ...")
            index = stack.enter_context(CacheIndex.open(url))
            row, asked = prepare(index, backend, items_for(size), questions)
            rows.append(row)
            timings.append((Timings(index, [item.question for item in asked]),
                            Timings(index, [vague(item.question) for item in asked])))
        if timed:
            for pair in timings:
                for t in pair:
                    t.warm_up()
            for _ in range(runs):
                for pair in timings:
                    for t in pair:
                        t.run()
            for row, (named, vague_) in zip(rows, timings):
                row.update(named.figures())
                row.update(vague_.figures("vague_"))
        for row in rows:
            console.print(row)
        return rows


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
    for backend in args.backends:
        timed = backend in args.latency
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                urls = [f"sqlite:///{tmp}/index{size}.db" for size in args.blocks]
                rows += measure(backend, urls, args.blocks, args.questions, args.runs, timed, console)
        else:
            databases = [postgres_database(args.postgres) for _ in args.blocks]
            try:
                rows += measure(backend, [url for url, _ in databases], args.blocks, args.questions, args.runs,
                                timed, console)
            finally:
                for _, drop in databases:
                    drop()
    table = Table(title=f"Cache index search, k={K}, QA set held-out split")
    timings = ("p50_ms", "p99_ms", "best_p50_ms", "best_p99_ms", "vague_p50_ms", "vague_p99_ms",
               "vague_best_p50_ms", "vague_best_p99_ms")
    for column in ("backend", "blocks", "questions", "recall@1", "recall@5", *timings, "ingest s"):
        table.add_column(column.replace("_ms", " ms").replace("_", " "),
                         justify="left" if column == "backend" else "right")
    for r in rows:
        table.add_row(r["backend"], f"{r['blocks']:,}", str(r["questions"]), f"{r['recall@1']:.3f}",
                      f"{r['recall@5']:.3f}", *(f"{r[m]:.2f}" if m in r else "-" for m in timings),
                      f"{r['ingest_s']:.1f}")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"k": K, "runs": args.runs, "rows": rows}, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
