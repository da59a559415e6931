"""Segmentation throughput on this machine's CPU: tokens of the served model per second for the
shipped learned segmenter (the boundary model alone, and with the size rules as the service runs
it) against the paragraph segmenter, median of --runs runs over the same texts.

Texts: a JSONL from `blockrag segment build-data` (--data), or 20 instances built from the
default held-out sources of this machine.

    .venv/bin/python bench/segment_throughput.py [--data held.jsonl] [--runs 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from blockrag.models import load_tokenizer
from blockrag.prompt import PromptTemplate
from blockrag.segment import ParagraphSegmenter, SegmentOptions
from blockrag.segment.train.data import build_instances, read_jsonl
from blockrag.segment.default import load_default_segmenter
from blockrag.segment.train.sources import default_sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/segment_throughput.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts = [i.text for i in (read_jsonl(args.data) if args.data else build_instances(
        default_sources("held_out"), seed=1, max_instances=20, max_tokens=6000))]
    template = PromptTemplate(load_tokenizer())

    def count(text: str) -> int:
        return len(template.block_ids(text))

    tokens = sum(count(t) for t in texts)
    learned = load_default_segmenter(count)
    paragraph = ParagraphSegmenter(count)
    options = SegmentOptions(max_block_tokens=256, min_block_tokens=32, granularity=0.5)
    methods = {
        "learned: boundary model only": lambda t: learned.cut_offsets(t, 0.5),
        "learned: as the service runs it (sizes 32-256)": lambda t: learned.segment(t, options),
        "paragraph segmenter (sizes up to 256)": lambda t: paragraph.segment(t, SegmentOptions(max_block_tokens=256)),
    }
    rows = []
    for name, method in methods.items():
        method(texts[0])  # warm-up
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            for text in texts:
                method(text)
            times.append(time.perf_counter() - started)
        seconds = statistics.median(times)
        rows.append({"method": name, "seconds": seconds, "tokens_per_second": tokens / seconds})
    table = Table("method", "seconds", "tokens / s", title=f"Segmentation throughput: {len(texts)} texts, {tokens} tokens "
                  f"(served tokenizer), {args.threads} threads, median of {args.runs}")
    for r in rows:
        table.add_row(r["method"], f"{r['seconds']:.2f}", f"{r['tokens_per_second']:.0f}")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"texts": len(texts), "tokens": tokens, "threads": args.threads, "rows": rows},
                                   indent=2))


if __name__ == "__main__":
    main()
