"""A design study for the boundary head (issue 10): featurize once, train several heads, score each
on its validation part, on held-out code/docs and on prose-dev, per family, beside the baselines.

    python -m blockrag.segment.train.study --base train_base.jsonl --prose train_prose.jsonl \\
        --held-out heldout.jsonl --prose-dev prose-dev.jsonl --out study/ [--device cuda]

Designs (each with the threshold and the suppression radius chosen on its validation part, never
on prose-dev):
- f3-old: the shipped recipe (format 3 features; 200 Choi-style + 100 heading-stripped instances);
- f3-all: format 3 features, every prose instance of --prose;
- f4-old / f4-all: the same with the unit similarity features (format 4, similarity.py).
Writes study.json (every figure) and one head directory per design.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from blockrag.segment.backbone import DEFAULT_ENCODER, Backbone
from blockrag.segment.train.baselines import EmbeddingSimilarity, TextTiling, no_split, paragraph_split
from blockrag.segment.boundary import BoundaryConfig, BoundaryModel
from blockrag.segment.train.data import read_jsonl
from blockrag.segment.similarity import DEFAULT_UNIT_WIDTHS, DEFAULT_WIDTHS, PER_WIDTH
from blockrag.segment.train.word_scores import read_reference, score_words
from blockrag.segment.train.training import (FeatureSet, choose_decision, featurize, probabilities, scores_at,
                                       suppressed, train_head)

OLD_CHOI, OLD_STRIPPED = 200, 100  # the shipped head's prose: build-prose's defaults


def family(instance) -> str:
    """code, docs, dialogue, prose concatenation or heading-free prose."""
    if instance.category == "prose":
        return "prose/concat" if instance.kind == "concat" else "prose/heading-free"
    return instance.category


def split(instances: list, validation: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """(fit, validation) as `blockrag segment train` splits."""
    rng = random.Random(seed)
    order = list(range(len(instances)))
    rng.shuffle(order)
    n_val = max(1, round(len(instances) * validation))
    return [instances[i] for i in order[n_val:]], [instances[i] for i in order[:n_val]]


def subset(data: FeatureSet, keep: list[int], columns: slice) -> FeatureSet:
    """The rows of instances `keep` (in that order) and the given columns."""
    rows = torch.cat([data.rows(i) for i in keep]) if keep else torch.zeros(0, dtype=torch.long)
    owner = torch.cat([torch.full((len(data.rows(i)),), k) for k, i in enumerate(keep)]) if keep else rows
    return FeatureSet(data.inputs[rows][:, columns], data.labels[rows], owner, [data.candidates[i] for i in keep])


def cut_offsets(probs: torch.Tensor, data: FeatureSet, threshold: float) -> list[list[int]]:
    return [[c.offset for c, p in zip(found, probs[data.rows(i)].tolist()) if p > threshold]
            for i, found in enumerate(data.candidates)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--prose", type=Path, required=True)
    parser.add_argument("--held-out", type=Path, required=True)
    parser.add_argument("--prose-dev", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backbone", default=DEFAULT_ENCODER)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--shipped", type=Path, default=None, help="Also score this format-3 head.")
    parser.add_argument("--designs", default="f4-all,f3-all,f4-old")
    parser.add_argument("--cache", type=Path, default=None, help="Features saved here, reused when present.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"designs": {}, "baselines": {}}
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", flush=True)

    backbone = Backbone.load(args.backbone, batch=64 if args.device != "cpu" else 8).to(args.device)
    base, prose = read_jsonl(args.base), read_jsonl(args.prose)
    n_choi = sum(1 for i in prose if i.kind == "concat")
    old_prose = prose[:OLD_CHOI] + prose[n_choi:n_choi + OLD_STRIPPED]
    held = read_jsonl(args.held_out)
    dev = read_reference(args.prose_dev)

    class _Dev:  # prose-dev rows as instances (the text and its boundaries; category prose)
        def __init__(self, text, boundaries):
            self.text, self.boundaries = text, boundaries

    dev_instances = [_Dev(t, b) for t, b in dev]
    pool = base + prose  # every instance featurized once, with every feature
    widths, unit_widths = list(DEFAULT_WIDTHS), list(DEFAULT_UNIT_WIDTHS)
    log(f"featurizing {len(pool)} training, {len(held)} held-out, {len(dev)} prose-dev instances")
    if args.cache and args.cache.exists():
        pool_set, held_set, dev_set = torch.load(args.cache, weights_only=False)
    else:
        pool_set = featurize(backbone, pool, widths=widths, unit_widths=unit_widths)
        log(f"training features: {tuple(pool_set.inputs.shape)}")
        held_set = featurize(backbone, held, widths=widths, unit_widths=unit_widths)
        dev_set = featurize(backbone, dev_instances, widths=widths, unit_widths=unit_widths)
        if args.cache:
            torch.save((pool_set, held_set, dev_set), args.cache)
    log("features done")
    f4 = slice(None)
    f3 = slice(0, pool_set.inputs.shape[1] - PER_WIDTH * len(unit_widths))
    index = {id(x): k for k, x in enumerate(pool)}
    datasets = {"old": base + old_prose, "all": base + prose}

    def score_head(name: str, head, columns: slice, val_ids: list[int], fixed: tuple[float, int] | None = None) -> dict:
        val = subset(pool_set, val_ids, columns)
        if fixed:
            threshold, radius = fixed
            val_scores = scores_at(suppressed(probabilities(head, val), val, radius), val, threshold)
        else:
            threshold, radius, val_scores = choose_decision(probabilities(head, val), val)
        out = {"threshold": threshold, "suppress": radius, "validation": val_scores.__dict__, "families": {}}
        held_c = subset(held_set, list(range(len(held))), columns)
        held_p = suppressed(probabilities(head, held_c), held_c, radius)
        out["held_out"] = scores_at(held_p, held_c, threshold).__dict__
        for fam in sorted({family(i) for i in held}):
            ids = [k for k, i in enumerate(held) if family(i) == fam]
            part = subset(held_set, ids, columns)
            out["families"][f"held_out/{fam}"] = scores_at(suppressed(probabilities(head, part), part, radius),
                                                           part, threshold).__dict__
        for fam in sorted({family(pool[i]) for i in val_ids}):
            ids = [i for i in val_ids if family(pool[i]) == fam]
            part = subset(pool_set, ids, columns)
            out["families"][f"validation/{fam}"] = scores_at(suppressed(probabilities(head, part), part, radius),
                                                             part, threshold).__dict__
        dev_c = subset(dev_set, list(range(len(dev))), columns)
        dev_p = suppressed(probabilities(head, dev_c), dev_c, radius)
        sweep = {}
        for g in (0.0, 0.25, 0.5, 0.75, 1.0):
            from blockrag.segment.learned import threshold_for

            cuts = cut_offsets(dev_p, dev_c, threshold_for(threshold, g))
            by_text = {t: c for (t, _), c in zip(dev, cuts)}
            sweep[str(g)] = score_words(dev, lambda text: by_text[text]).__dict__
        out["prose_dev"] = sweep
        # for the record only (never used to choose): the best radius/threshold on prose-dev itself
        oracle = {}
        for r in (0, 3):
            p = suppressed(probabilities(head, dev_c), dev_c, r)
            best = None
            for t in [x / 40 for x in range(1, 40)] + [0.98, 0.99, 0.995, 0.998, 0.999]:
                cuts = cut_offsets(p, dev_c, t)
                by_text = {tx: c for (tx, _), c in zip(dev, cuts)}
                s = score_words(dev, lambda text: by_text[text])
                if best is None or s.pk < best[1]["pk"]:
                    best = (t, s.__dict__)
            oracle[str(r)] = best
        out["prose_dev_oracle"] = oracle
        log(f"{name}: thr {threshold} r {radius} val Pk {val_scores.pk:.3f}; held-out Pk {out['held_out']['pk']:.3f} "
            f"WD {out['held_out']['window_diff']:.3f}; prose-dev Pk {sweep['0.5']['pk']:.3f} "
            f"WD {sweep['0.5']['window_diff']:.3f} F1 {sweep['0.5']['f1']:.3f}")
        return out

    for design in args.designs.split(","):
        fmt, data_name = design.split("-")
        columns = f4 if fmt == "f4" else f3
        chosen = datasets[data_name]
        fit, val = split(chosen)
        fit_ids, val_ids = [index[id(x)] for x in fit], [index[id(x)] for x in val]
        fit_set = subset(pool_set, fit_ids, columns)
        n_unit = PER_WIDTH * len(unit_widths) if fmt == "f4" else 0
        head = train_head(fit_set, epochs=args.epochs, seed=0, similarity=PER_WIDTH * len(widths), unit=n_unit,
                          device=args.device)
        result = score_head(design, head, columns, val_ids)
        result.update({"instances": len(fit), "validation_instances": len(val),
                       "candidates": len(fit_set.labels), "cuts": int(fit_set.labels.sum())})
        report["designs"][design] = result
        config = BoundaryConfig(backbone=DEFAULT_ENCODER, backbone_kind=backbone.kind,
                                feature_size=backbone.feature_size, threshold=result["threshold"],
                                window=backbone.window, overlap=backbone.overlap, similarity_widths=widths,
                                unit_widths=unit_widths if fmt == "f4" else [], suppress=result["suppress"],
                                format=4 if fmt == "f4" else 3, training={
                                    "design": design, "epochs": args.epochs, "seed": 0,
                                    **{k: result[k] for k in ("instances", "validation_instances", "candidates", "cuts")},
                                    "validation": result["validation"]})
        BoundaryModel(backbone, head, config).save(args.out / design)
        (args.out / "study.json").write_text(json.dumps(report, indent=1))

    if args.shipped:
        shipped = BoundaryModel.load(args.shipped, backbone)
        _, val = split(datasets["old"])
        report["designs"]["shipped"] = score_head("shipped", shipped.head, f3, [index[id(x)] for x in val],
                                                  fixed=(shipped.config.threshold, 0))

    log("baselines")
    embed = EmbeddingSimilarity(backbone.embed)
    for name, method in [("no split", no_split), ("paragraph split", paragraph_split), ("TextTiling", TextTiling()),
                         ("embedding similarity", embed)]:
        from blockrag.segment.train.metrics import evaluate

        row = {"prose_dev": score_words(dev, method).__dict__}
        for fam in sorted({family(i) for i in held}):
            pairs = [(i.text, i.boundaries) for i in held if family(i) == fam]
            row[f"held_out/{fam}"] = evaluate(pairs, method).__dict__
        row["held_out"] = evaluate([(i.text, i.boundaries) for i in held], method).__dict__
        report["baselines"][name] = row
        log(f"{name}: prose-dev Pk {row['prose_dev']['pk']:.3f}; held-out Pk {row['held_out']['pk']:.3f}")
    (args.out / "study.json").write_text(json.dumps(report, indent=1))
    log("done")


if __name__ == "__main__":
    main()
