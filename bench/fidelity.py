"""Fidelity of block attention: full attention, block attention on the base model, after block
distillation, and after block fine-tuning at the same number of steps.

The question set is the project's own (blockrag.distill.qa_set: fictional entities, five
passages of which one holds the answer, distractors of the same kind, 10+ templates), held out
from every training run: training reads only the default corpus (Python's reference manual
topics and the bundled samples) with templated, label-free questions answered by the teacher.

Per configuration: accuracy, mean answer-token KL(full || block) on the serving path (the
engine's cached blocks), its ratio to the base model's, and the median wall-clock of a training
step (same examples per step, same steps).

    python bench/fidelity.py [--questions 300] [--steps 200] [--split heldout]
    python bench/fidelity.py --adapter PATH          # score a trained adapter only
    python bench/fidelity.py --no-training           # full, block, block with untrained sinks
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from blockrag.attention import BlockAttentionEngine
from blockrag.distill.adapter import Adapter
from blockrag.distill.config import DistillConfig, parse_overrides
from blockrag.distill.data import DataConfig
from blockrag.distill.fidelity import FidelityProbe, FidelityResult, qa_questions, served_engine
from blockrag.distill.recipe import DistillationRecipe, resolve_sink
from blockrag.distill.training import build_examples, default_corpus, run_steps
from blockrag.models import load_model
from blockrag.prompt import PromptTemplate

console = Console()

# ablations of the distillation recipe (--variants): each switch off in turn
VARIANTS = {
    "no-sinks": dict(sink_token=None),
    "no-dropout": dict(block_dropout=0.0),
    "no-weighting": dict(token_weighting=0.0),
}


def train(config: DistillConfig, examples, args) -> tuple[Adapter, list[float], list[dict]]:
    model, tokenizer = load_model(args.model, device=args.device)
    recipe = DistillationRecipe(config, model, resolve_sink(tokenizer, config.sink_token))
    recipe.setup()
    log = []

    def on_step(m):
        log.append(m.to_dict())
        if m.step % 10 == 0 or m.step == config.steps:
            kl = "" if m.kl is None else f" kl {m.kl:.4f}"
            console.print(f"  [{config.objective}] step {m.step}/{config.steps} loss {m.loss:.4f}{kl} "
                          f"{m.tokens_per_s:.0f} tok/s")

    run_steps(recipe, examples, config.steps, on_step)
    return recipe.adapter(), [m["seconds"] for m in log[1:]], log


def served(adapter: Adapter, args) -> BlockAttentionEngine:
    return served_engine(adapter, load_model(args.model, device=args.device)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--split", default="heldout", choices=["dev", "heldout"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--train-examples", type=int, default=400)
    parser.add_argument("--examples-per-step", type=int, default=4)
    parser.add_argument("--adapter", type=Path, help="score this adapter instead of training")
    parser.add_argument("--variants", nargs="*", default=[], choices=sorted(VARIANTS))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="distillation config overrides")
    parser.add_argument("--no-baseline", action="store_true", help="skip block fine-tuning")
    parser.add_argument("--no-training", action="store_true",
                        help="only the untrained rows: full, block, block with (untrained) sink tokens")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/fidelity.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()

    model, tokenizer = load_model(args.model, device=args.device)
    template = PromptTemplate(tokenizer)
    probe = FidelityProbe(BlockAttentionEngine(model, fuse=False), template, qa_questions(args.questions, args.split),
                          progress=lambda i, n: i % 50 == 0 and console.print(f"  full attention {i}/{n}"))
    console.print(f"full attention: {probe.full.correct}/{probe.full.questions} "
                  f"({time.perf_counter() - started:.0f} s)")
    rows: dict[str, dict] = {"full attention": {"result": probe.full}}
    rows["block, base model"] = {"result": probe.score(BlockAttentionEngine(model, fuse=False))}
    console.print(f"block, base model: {rows['block, base model']['result']} ({time.perf_counter() - started:.0f} s)")

    config = DistillConfig.from_dict({"steps": args.steps, "examples_per_step": args.examples_per_step,
                                      **parse_overrides(args.set)})
    if args.no_training:
        sink = resolve_sink(tokenizer, config.sink_token)
        rows["block, base model + sinks (untrained)"] = {
            "result": probe.score(BlockAttentionEngine(model, fuse=False, sink_token_id=sink))}
    elif args.adapter:
        adapter = Adapter.from_bytes(args.adapter.read_bytes())
        rows[f"block, {args.adapter.name}"] = {"result": probe.score(served(adapter, args))}
    else:
        examples = build_examples(model, tokenizer, default_corpus(), args.train_examples, seed=config.seed,
                                  data=DataConfig(max_example_tokens=config.max_example_tokens))
        console.print(f"{len(examples)} training examples, {sum(e.num_tokens for e in examples)} tokens "
                      f"({time.perf_counter() - started:.0f} s)")
        runs = {"block, distilled": config}
        for name in args.variants:
            runs[f"block, distilled {name}"] = replace(config, **VARIANTS[name])
        if not args.no_baseline:
            runs["block, block fine-tuning"] = DistillConfig.block_fine_tuning(
                steps=args.steps, examples_per_step=args.examples_per_step,
                learning_rate=config.learning_rate, lora=config.lora, seed=config.seed)
        for name, run_config in runs.items():
            adapter, seconds, log = train(run_config, examples, args)
            rows[name] = {"result": probe.score(served(adapter, args)), "step_seconds": statistics.median(seconds),
                          "log": log, "config": run_config.to_dict()}
            console.print(f"{name}: {rows[name]['result']} ({time.perf_counter() - started:.0f} s)")

    base_kl = rows["block, base model"]["result"].kl
    table = Table(title=f"Fidelity on {args.questions} {args.split} questions ({args.device})")
    for column in ("configuration", "accuracy", "answer-token KL", "KL / base", "s per step"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    for name, row in rows.items():
        r: FidelityResult = row["result"]
        table.add_row(name, f"{100 * r.accuracy:.1f}% ({r.correct}/{r.questions})",
                      "-" if r.kl is None else f"{r.kl:.3f}",
                      "-" if r.kl is None else f"{r.kl / base_kl:.2f}",
                      f"{row['step_seconds']:.3f}" if "step_seconds" in row else "-")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "split": args.split, "questions": args.questions, "steps": args.steps, "device": args.device,
        "rows": {name: {"accuracy": row["result"].accuracy, "correct": row["result"].correct, "kl": row["result"].kl,
                        "answer_tokens": row["result"].answer_tokens, **{k: v for k, v in row.items() if k != "result"}}
                 for name, row in rows.items()},
        "seconds": time.perf_counter() - started}, indent=1))


if __name__ == "__main__":
    main()
