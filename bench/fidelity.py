"""Fidelity of block attention: full attention, block attention on the base model, after block
distillation, and after block fine-tuning at the same number of steps.

The question set is the project's own (blockrag.distill.qa_set: fictional entities, five
passages of which one holds the answer, distractors of the same kind, 10+ templates), held out
from every training run: training reads the default corpus (Python's reference manual topics
and the bundled samples) with templated, label-free questions, and fact questions over invented
entities of other kinds (distill/facts.py), all answered by the teacher.

Per configuration: accuracy, mean answer-token KL(full || block) on the serving path (the
engine's cached blocks, the first passage in its lead form on an engine with an opening, as the
platform serves it; --cached-first-passage adds the row without), its ratio to the base model's,
and the median wall-clock of a training step (same examples per step, same steps).

    python bench/fidelity.py [--questions 300] [--steps 200] [--split heldout]
    python bench/fidelity.py --adapter A --adapter B # score trained adapters only
                             [--cached-first-passage]  # and each without the exact first passage
    python bench/fidelity.py --no-training           # full, block, block with untrained sinks or opening
                                                     # (--opening-gap G, repeatable: the opening's gaps)
    python bench/fidelity.py --shard 0/3 ... ; python bench/fidelity.py --merge s0.json s1.json s2.json
                                                     # one process per shard (one GPU, several
                                                     # launch-bound processes), then one table
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
from blockrag.attention.layout import DEFAULT_GAP, Opening
from blockrag.distill.adapter import Adapter
from blockrag.distill.config import DistillConfig, parse_overrides
from blockrag.distill.data import DataConfig
from blockrag.distill.fidelity import FidelityProbe, FidelityResult, qa_questions, served_engine
from blockrag.distill.recipe import DistillationRecipe, resolve_sink
from blockrag.distill.training import build_examples, default_corpus, run_steps
from blockrag.models import load_model
from blockrag.prompt import PromptTemplate

console = Console(width=200)  # the by-position columns are wide; logs are read off a terminal

# ablations of the distillation recipe (--variants): each switch off in turn
VARIANTS = {
    "no-sinks": dict(sink_token=None),
    "no-dropout": dict(block_dropout=0.0),
    "no-weighting": dict(token_weighting=0.0),
}


def train(config: DistillConfig, examples, args) -> tuple[Adapter, list[float], list[dict]]:
    model, tokenizer = load_model(args.model, device=args.device)
    recipe = DistillationRecipe.for_tokenizer(config, model, tokenizer)
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
    parser.add_argument("--examples-per-step", type=int, default=8)
    parser.add_argument("--adapter", type=Path, action="append", default=[],
                        help="score this adapter instead of training (repeatable)")
    parser.add_argument("--shard", default="0/1", help="K/N: only the questions whose index is K modulo N")
    parser.add_argument("--merge", type=Path, nargs="+", help="combine the JSON of shards into one table")
    parser.add_argument("--variants", nargs="*", default=[], choices=sorted(VARIANTS))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="distillation config overrides")
    parser.add_argument("--no-baseline", action="store_true", help="skip block fine-tuning")
    parser.add_argument("--no-training", action="store_true",
                        help="only the untrained rows: full, block, block with (untrained) sink tokens")
    parser.add_argument("--opening-gap", type=int, action="append", default=None,
                        help=f"untrained rows with a shared opening at this gap (repeatable; default {DEFAULT_GAP})")
    parser.add_argument("--adapters-only", action="store_true",
                        help="with --adapter: skip the base model's rows (full attention is still the reference)")
    parser.add_argument("--cached-first-passage", action="store_true",
                        help="for each adapter with an opening, also a row with the first passage in its cached "
                             "form (the platform serves it exact: exact_first_passage)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/fidelity.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.merge:
        merged = merge([json.loads(path.read_text()) for path in args.merge])
        if merged["unfinished_rows"]:
            console.print(f"left out, unfinished in some shard: {', '.join(merged['unfinished_rows'])}")
        show(merged["rows"], f"Fidelity on {merged['questions']} {merged['split']} questions ({merged['device']})")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(merged, indent=1))
        return
    started = time.perf_counter()
    shard, shards = map(int, args.shard.split("/"))

    model, tokenizer = load_model(args.model, device=args.device)
    template = PromptTemplate(tokenizer)
    probe = FidelityProbe(BlockAttentionEngine(model, fuse=False), template, qa_questions(args.questions, args.split)[shard::shards],
                          progress=lambda i, n: i % 50 == 0 and console.print(f"  full attention {i}/{n}"))
    console.print(f"full attention: {probe.full.correct}/{probe.full.questions} "
                  f"({time.perf_counter() - started:.0f} s)")
    rows: dict[str, dict] = {}

    def save(complete: bool) -> dict:
        """The rows so far, written after every row: a run stopped by a time limit keeps them."""
        results = {name: {**as_dict(row["result"]), **{k: v for k, v in row.items() if k != "result"}}
                   for name, row in rows.items()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "split": args.split, "questions": probe.full.questions, "shard": args.shard, "complete": complete,
            "steps": None if args.adapter or args.no_training else args.steps,
            "device": args.device, "rows": results, "seconds": time.perf_counter() - started}, indent=1))
        return results

    def record(name: str, row: dict) -> None:
        rows[name] = row
        console.print(f"{name}: {row['result']} ({time.perf_counter() - started:.0f} s)")
        save(complete=False)

    record("full attention", {"result": probe.full})
    if not (args.adapter and args.adapters_only):
        record("block, base model", {"result": probe.score(BlockAttentionEngine(model, fuse=False))})

    config = DistillConfig.from_dict({"steps": args.steps, "examples_per_step": args.examples_per_step,
                                      **parse_overrides(args.set)})
    if args.no_training:
        sink = resolve_sink(tokenizer, config.sink_token)
        record("block, base model + sinks (untrained)",
               {"result": probe.score(BlockAttentionEngine(model, fuse=False, sink_token_id=sink))})
        untrained_openings(probe, model, template, args.opening_gap, record)
    elif args.adapter:
        # what sharing the opening alone buys, untrained (with --opening-gap): the baseline an
        # opening adapter improves on
        if args.opening_gap and not args.adapters_only:
            untrained_openings(probe, model, template, args.opening_gap, record)
        for path in args.adapter:
            adapter = Adapter.from_bytes(path.read_bytes())
            engine = served(adapter, args)
            record(f"block, {path.stem}", {"result": probe.score(engine)})
            if args.cached_first_passage and adapter.opening is not None:
                record(f"block, {path.stem}, first passage cached",
                       {"result": probe.score(engine, exact_first_passage=False)})
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
            record(name, {"result": probe.score(served(adapter, args)), "step_seconds": statistics.median(seconds),
                          "log": log, "config": run_config.to_dict()})

    show(save(complete=True), f"Fidelity on {probe.full.questions} {args.split} questions ({args.device})")


def untrained_openings(probe: FidelityProbe, model, template: PromptTemplate, gaps: list[int] | None,
                       record) -> None:
    """Rows of the base model with a shared opening (blocks encoded after the template's opening)."""
    for gap in gaps or [DEFAULT_GAP]:
        engine = BlockAttentionEngine(model, fuse=False, opening=Opening(tuple(template.prefix_ids()), gap))
        record(f"block, base model + opening, gap {gap} (untrained)", {"result": probe.score(engine)})


def as_dict(r: FidelityResult) -> dict:
    return {"questions": r.questions, "accuracy": r.accuracy, "correct": r.correct, "kl": r.kl,
            "answer_tokens": r.answer_tokens,
            "by_position": {str(k): list(v) for k, v in r.by_position.items()},  # JSON keys are strings
            "kl_by_position": {str(k): list(v) for k, v in r.kl_by_position.items()}}


def merge(parts: list[dict]) -> dict:
    """Shards of one run -> the whole: counts add up, KL is re-weighted by answer tokens. A row
    that some shard did not finish (stopped by a time limit) is left out and named."""
    rows = {}
    unfinished = sorted({name for p in parts for name in p["rows"]} - set.intersection(*(set(p["rows"]) for p in parts)))
    for name in (n for n in parts[0]["rows"] if n not in unfinished):
        got = [p["rows"][name] for p in parts]
        tokens = sum(r["answer_tokens"] for r in got)
        kl = None if got[0]["kl"] is None else sum(r["kl"] * r["answer_tokens"] for r in got) / tokens
        by_position, kl_by_position = {}, {}  # counts add up; KL token-weighted, as the overall KL
        for p in sorted({k for r in got for k in r.get("by_position", {})}, key=int):
            counts = [r["by_position"].get(p, (0, 0)) for r in got]
            by_position[int(p)] = (sum(c for c, _ in counts), sum(n for _, n in counts))
            shares = [r["kl_by_position"][p] for r in got if p in r.get("kl_by_position", {})]  # (mean, tokens)
            if shares:
                n = sum(t for _, t in shares)
                kl_by_position[int(p)] = (sum(kl * t for kl, t in shares) / n, n)
        result = FidelityResult(sum(r["questions"] for r in got), sum(r["correct"] for r in got), kl, tokens, by_position,
                                kl_by_position)
        rows[name] = {**as_dict(result), **{k: v for k, v in got[0].items() if k not in as_dict(result)}}
    return {"split": parts[0]["split"], "questions": sum(p["questions"] for p in parts), "device": parts[0]["device"],
            "shards": [p.get("shard") for p in parts], "rows": rows, "unfinished_rows": unfinished,
            "seconds": max(p["seconds"] for p in parts)}


def show(rows: dict[str, dict], title: str) -> None:
    base_kl = rows.get("block, base model", {}).get("kl")  # absent under --adapters-only
    table = Table(title=title)
    positions = sorted({k for row in rows.values() for k in row.get("by_position", {})}, key=int)
    for column in ("configuration", "accuracy", "answer-token KL", "KL / base", "s per step",
                   *(f"answer in passage {int(p) + 1}: right (KL)" for p in positions)):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    for name, row in rows.items():
        kls = row.get("kl_by_position", {})
        cells = [f"{c}/{n}" + (f" ({kls[p][0]:.3f})" if p in kls else "")
                 for p, (c, n) in ((p, row.get("by_position", {}).get(p, (0, 0))) for p in positions)]
        table.add_row(name, f"{100 * row['accuracy']:.1f}% ({row['correct']}/{row['questions']})",
                      "-" if row["kl"] is None else f"{row['kl']:.3f}",
                      "-" if row["kl"] is None or base_kl is None else f"{row['kl'] / base_kl:.2f}",
                      f"{row['step_seconds']:.3f}" if "step_seconds" in row else "-", *cells)
    console.print(table)


if __name__ == "__main__":
    main()
