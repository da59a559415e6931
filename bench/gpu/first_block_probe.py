"""Probe: does reading the first passage exactly win back what block attention still loses there?

Under full attention the first passage is read right after the prompt's opening; under block
attention with a shared opening every block is encoded `gap` positions after it, the first one
too. For the block that lands first, gap 0 is exact: its KV would equal full attention's. This
probe answers the fidelity questions greedily under the one-forward form of both layouts
(attention/reference.py's reference_greedy: masked forwards, no KV cache): "gap 500" as served, and "first passage
exact", where the first passage is a global block (it sees the opening itself, as under full
attention). The first row must reproduce the engine's figure for the same adapter; the second
says whether a serving mode that computes (or stores) the first block's gap-0 KV is worth
building. Accuracy overall and by the answer passage's position.

    PYTHONPATH=libs python3 bench/gpu/first_block_probe.py --questions 300 --out first_block.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


from blockrag.attention.reference import reference_greedy
from blockrag.distill.adapter import Adapter
from blockrag.distill.default_adapter import default_adapter
from blockrag.distill.fidelity import qa_questions, served_engine
from blockrag.models import load_model
from blockrag.prompt import PromptTemplate

LAYOUTS = {"gap 500 (served)": (), "first passage exact": (1,)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--split", default="heldout")
    parser.add_argument("--adapter", type=Path, help="default: the shipped adapter")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--max-new-tokens", type=int, default=32)  # fidelity.py's budget
    parser.add_argument("--seconds", type=float, default=1e9, help="stop after this long, with what is done")
    parser.add_argument("--out", type=Path, default=Path("first_block.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    model, tokenizer = load_model(None, device=args.device)
    adapter = Adapter.from_bytes(args.adapter.read_bytes()) if args.adapter else default_adapter()
    engine = served_engine(adapter, model)  # merges the adapter into `model`
    template = PromptTemplate(tokenizer)
    rows = {name: {"correct": 0, "by_position": {}} for name in LAYOUTS}
    done = 0
    for q in qa_questions(args.questions, args.split):
        if time.perf_counter() - started > args.seconds:
            break
        blocks = [template.prefix_ids()] + [template.block_ids(p) for p in q.passages]
        final = template.final_ids(q.question)
        for name, global_blocks in LAYOUTS.items():
            ids = reference_greedy(engine.model, blocks, final, args.max_new_tokens, engine.stop_ids,
                                   opening=adapter.opening, global_blocks=global_blocks)
            right = q.is_correct(tokenizer.decode(ids, skip_special_tokens=True))
            rows[name]["correct"] += right
            at = rows[name]["by_position"].setdefault(str(q.answer_passage + 1), [0, 0])
            at[0] += right
            at[1] += 1
        done += 1
    result = {"questions": done, "split": args.split, "seconds": time.perf_counter() - started, "rows": rows}
    args.out.write_text(json.dumps(result, indent=1))
    for name, row in rows.items():
        positions = ", ".join(f"{k}: {v[0]}/{v[1]}" for k, v in sorted(row["by_position"].items()))
        print(f"{name}: {row['correct']}/{done} ({positions})")


if __name__ == "__main__":
    main()
