"""What reading the first passage exactly costs in time to first token, on the CPU.

The served default model (SmolLM2-135M-Instruct with the shipped adapter merged, float32): every
block is encoded after the template's opening, and the platform hands the prompt's first passage
in its lead form (engine.encode_lead, `exact_first_passage`), computed the first time a block
comes first and kept in memory after. Per context (blocks of 128-256 tokens of sample text after
the opening, a 24-token question), median of --runs runs after a warm-up, all in one run:

    full        full-attention prefill of the whole prompt (the baseline)
    warm lead   the lead form already in memory: prefill over cached blocks only
    cold lead   encode_lead of the first passage, then that prefill (a block's first time first)

    python bench/first_passage_cpu.py [--runs 5] [--contexts 512 1024 2048] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from blockrag.distill.default_adapter import default_adapter
from blockrag.distill.fidelity import served_engine
from blockrag.models import load_model
from blockrag.prompt import PromptTemplate

from ttft_cpu import QUESTION_TOKENS, corpus_tokens, median_ms, split_blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--contexts", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/first_passage_cpu.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model()
    engine = served_engine(default_adapter(), model)
    template = PromptTemplate(tokenizer)
    question = template.final_ids("Which river runs through Veldmark, and when was its oldest bridge built?")
    question = (question * 2)[:QUESTION_TOKENS] if len(question) < QUESTION_TOKENS else question[-QUESTION_TOKENS:]
    rng = random.Random(0)
    rows = []
    for context in args.contexts:
        blocks = [template.prefix_ids(), *split_blocks(corpus_tokens(tokenizer, context), rng)]
        kvs = engine.encode_blocks(blocks)
        lead = engine.encode_lead(blocks[1])
        prompt = [t for b in blocks for t in b] + question

        def full() -> int:
            return next(engine.generate([], prompt, max_new_tokens=1))

        def warm() -> int:
            return next(engine.generate([kvs[0], lead, *kvs[2:]], question, max_new_tokens=1))

        def cold() -> int:
            return next(engine.generate([kvs[0], engine.encode_lead(blocks[1]), *kvs[2:]], question,
                                        max_new_tokens=1))

        full_ms, warm_ms, cold_ms = (median_ms(f, args.runs) for f in (full, warm, cold))
        rows.append({"context_tokens": len(prompt) - len(question), "blocks": len(blocks) - 1,
                     "first_passage_tokens": len(blocks[1]), "full_ms": round(full_ms, 1),
                     "warm_lead_ms": round(warm_ms, 1), "cold_lead_ms": round(cold_ms, 1),
                     "full_over_warm": round(full_ms / warm_ms, 2), "full_over_cold": round(full_ms / cold_ms, 2)})
        print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "first_passage_cpu", "threads": args.threads, "runs": args.runs,
                                    "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
