"""Segmentation throughput: tokens of the served model per second for the shipped learned
segmenter (the boundary model read one text at a time; the service's path, `segment_many`, which
reads the texts of a request together with the size rules) against the paragraph segmenter,
median of --runs runs over the same texts, the methods interleaved within a run. The load
average is recorded with the figures: on a shared machine it moves them.

Texts: a JSONL from `blockrag segment build-data` (--data), or instances built from the default
held-out sources of this machine (--texts of them).

    .venv/bin/python bench/segment_throughput.py [--data held.jsonl] [--texts 20] [--runs 3]
        [--threads 2] [--device cpu|cuda] [--model DIR ...] [--tokenizer DIR]
        [--out bench/segment_throughput-results.json]

--model times another segmenter directory beside the shipped one, in the same run (the previous
format against the new, say).

--device cuda runs the backbone on the first GPU (a replica given one does so: segmentation
deployment), with a GPU-sized batch (backbone.GPU_BATCH windows) unless --batch says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from blockrag.models import load_tokenizer
from blockrag.prompt import PromptTemplate
from blockrag.segment import ParagraphSegmenter, SegmentOptions
from blockrag.segment.default import load_default_segmenter, load_segmenter
from blockrag.segment.train.data import build_instances, read_jsonl
from blockrag.segment.train.sources import default_sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--texts", type=int, default=20, help="texts built from the held-out sources (without --data)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=int, help="windows a padded encoder batch (default: the backbone's)")
    parser.add_argument("--model", type=Path, action="append", default=[],
                        help="a segmenter directory to time beside the shipped one (repeatable)")
    parser.add_argument("--tokenizer", type=Path, help="the served model's tokenizer (default: the default model's)")
    parser.add_argument("--out", type=Path, default=Path("bench/segment_throughput-results.json"))
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no GPU on this machine")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    texts = [i.text for i in (read_jsonl(args.data) if args.data else build_instances(
        default_sources("held_out"), seed=1, max_instances=args.texts, max_tokens=6000))]
    template = PromptTemplate(load_tokenizer(args.tokenizer))

    def count(text: str) -> int:
        return len(template.block_ids(text))

    tokens = sum(count(t) for t in texts)
    models = {"shipped": load_default_segmenter(count)}
    for directory in args.model:
        models[directory.name] = load_segmenter(directory, count)
    for learned in models.values():
        learned.model.backbone.to(args.device, batch=args.batch)
    paragraph = ParagraphSegmenter(count)
    options = SegmentOptions(max_block_tokens=256, min_block_tokens=32, granularity=0.5)

    def synchronized(run):
        def timed(batch: list[str]):
            run(batch)
            if args.device == "cuda":
                torch.cuda.synchronize()
        return timed

    methods = {}
    for name, learned in models.items():
        label = f"{name} (format {learned.model.config.format})"
        methods[f"{label}: boundary model, one text at a time"] = synchronized(
            lambda batch, learned=learned: [learned.model.probabilities(t) for t in batch])
        methods[f"{label}: segment_many, texts read together (the service's path, sizes 32-256)"] = synchronized(
            lambda batch, learned=learned: learned.segment_many(batch, [options] * len(batch)))
    methods["paragraph segmenter (sizes up to 256)"] = lambda batch: [
        paragraph.segment(t, SegmentOptions(max_block_tokens=256)) for t in batch]
    times: dict[str, list[float]] = {name: [] for name in methods}
    for method in methods.values():
        method(texts[:1])  # warm-up
    for _ in range(args.runs):  # methods interleaved, so that a change of the machine's load hits each alike
        for name, method in methods.items():
            started = time.perf_counter()
            method(texts)
            times[name].append(time.perf_counter() - started)
    rows = []
    for name, runs in times.items():
        seconds = statistics.median(runs)
        rows.append({"method": name, "seconds": seconds, "tokens_per_second": tokens / seconds, "runs_seconds": runs})
    load_after = os.getloadavg()
    table = Table("method", "seconds", "tokens / s", title=f"Segmentation throughput: {len(texts)} texts, {tokens} tokens "
                  f"(served tokenizer), {args.device}, {args.threads} threads, median of {args.runs}; "
                  f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    for r in rows:
        table.add_row(r["method"], f"{r['seconds']:.2f}", f"{r['tokens_per_second']:.0f}")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": " ".join(["bench/segment_throughput.py", *sys.argv[1:]]), "device": args.device,
        "backbone_batch": models["shipped"].model.backbone.batch, "texts": len(texts), "tokens": tokens,
        "threads": args.threads, "cpu_count": os.cpu_count(),
        "load_average_before": load_before, "load_average_after": load_after, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
