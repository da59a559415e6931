"""Time to first token on the CPU: full-attention prefill against cached-block prefill.

Default model (SmolLM2-135M-Instruct, float32). Contexts of 512, 1K, 2K and 4K tokens in blocks
of 128-256 tokens (sample text, cycled) plus a 24-token question. Blocks are encoded before
timing (they are cached); the cached time covers rotating and laying out every block's KV,
prefilling the question and choosing the first token. Both paths run the engine's code, so the
ratio measures block attention, not two implementations. Median of --runs runs after a warm-up.

    python bench/ttft_cpu.py [--runs 7] [--out bench/results/ttft_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from blockrag.attention import BlockAttentionEngine
from blockrag.models import load_model
from blockrag.prompt import PromptTemplate
from blockrag.samples import sample_documents

CONTEXTS = (512, 1024, 2048, 4096)
QUESTION_TOKENS = 24


def corpus_tokens(tokenizer, n: int) -> list[int]:
    """n token ids of the bundled sample text, repeated as needed."""
    ids = tokenizer("\n\n".join(sample_documents().values()), add_special_tokens=False).input_ids
    return (ids * (n // len(ids) + 1))[:n]


def split_blocks(ids: list[int], rng: random.Random) -> list[list[int]]:
    """Consecutive blocks of 128-256 tokens (the last one may be shorter)."""
    blocks, start = [], 0
    while start < len(ids):
        size = rng.randint(128, 256)
        blocks.append(ids[start : start + size])
        start += size
    return blocks


def median_ms(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--contexts", type=int, nargs="+", default=list(CONTEXTS))
    parser.add_argument("--out", type=Path, default=Path("bench/results/ttft_cpu.json"))
    args = parser.parse_args()

    model, tokenizer = load_model()
    engine = BlockAttentionEngine.for_serving(model)
    template = PromptTemplate(tokenizer)
    rng = random.Random(0)
    question = template.final_ids("Which river runs through Veldmark, and when was its oldest bridge built?")
    question = (question * 2)[:QUESTION_TOKENS] if len(question) < QUESTION_TOKENS else question[-QUESTION_TOKENS:]

    rows = []
    for context in args.contexts:
        blocks = split_blocks(corpus_tokens(tokenizer, context), rng)
        started = time.perf_counter()
        kvs = engine.encode_blocks(blocks)
        encode_s = time.perf_counter() - started
        prompt = [t for b in blocks for t in b] + question

        def full() -> int:
            return next(engine.generate([], prompt, max_new_tokens=1))

        def cached() -> int:
            return next(engine.generate(kvs, question, max_new_tokens=1))

        assert full() is not None and cached() is not None
        full_ms, cached_ms = median_ms(full, args.runs), median_ms(cached, args.runs)
        rows.append({"context_tokens": context, "blocks": len(blocks), "question_tokens": len(question),
                     "full_prefill_ms": round(full_ms, 2), "cached_prefill_ms": round(cached_ms, 2),
                     "speedup": round(full_ms / cached_ms, 2),
                     "encode_tokens_per_s": round(context / encode_s, 1)})

    table = Table(title=f"Time to first token, SmolLM2-135M-Instruct float32, "
                        f"{torch.get_num_threads()} threads, median of {args.runs}")
    for column in ("context", "blocks", "full prefill ms", "cached ms", "speedup", "encode tok/s"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(str(r["context_tokens"]), str(r["blocks"]), f"{r['full_prefill_ms']:.1f}",
                      f"{r['cached_prefill_ms']:.1f}", f"{r['speedup']:.1f}x", f"{r['encode_tokens_per_s']:.0f}")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "ttft_cpu", "model": "SmolLM2-135M-Instruct", "dtype": "float32",
        "threads": torch.get_num_threads(), "runs": args.runs, "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
