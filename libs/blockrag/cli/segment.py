"""`blockrag segment`: build training data from a corpus, train the boundary model, evaluate it
against baselines, and cut a file into blocks."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()
app = typer.Typer(help="The learned segmenter: data, training, evaluation.", no_args_is_help=True)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


@app.command("build-data")
def build_data(
    out: Annotated[Path, typer.Option(help="JSONL file to write.")],
    corpus: Annotated[list[Path] | None, typer.Argument(help="Directories or files; default: the built-in offline sources of --split.")] = None,
    split: Annotated[str, typer.Option(help="Default sources: train or held_out.")] = "train",
    seed: Annotated[int, typer.Option()] = 0,
    min_tokens: Annotated[int, typer.Option(help="Shortest instance (estimated tokens).")] = 2000,
    max_tokens: Annotated[int, typer.Option(help="Longest instance (estimated tokens).")] = 32000,
    max_instances: Annotated[int | None, typer.Option(help="At most this many, balanced across categories.")] = None,
) -> None:
    """Labelled instances (documents cut at their own structure, and concatenations of segments
    of different documents) from a corpus of text, Markdown, HTML and code files."""
    from blockrag.segment.train.data import build_instances, write_jsonl
    from blockrag.segment.train.sources import default_sources
    from blockrag.segment.train.prose import forbidden

    sources = corpus or default_sources(split)
    if not sources:
        raise typer.BadParameter(f"no corpus given and none of the default {split} sources exist here")
    with _progress() as progress:
        task = progress.add_task("Reading the corpus", total=None)
        instances = build_instances(sources, seed=seed, min_tokens=min_tokens, max_tokens=max_tokens,
                                    max_instances=max_instances,
                                    progress=lambda done, total: progress.update(task, completed=done, total=total))
    if split == "train" and not corpus:
        # the hidden prose acceptance set comes from man pages, licence texts and the Debian FAQ
        instances = [i for i in instances if not any(forbidden(s) for s in i.sources)]
    written = write_jsonl(out, instances)
    _summary(instances, written, out)


@app.command("build-prose")
def build_prose(
    out: Annotated[Path, typer.Option(help="JSONL file to write.")],
    seed: Annotated[int, typer.Option()] = 0,
    choi: Annotated[int, typer.Option(help="Choi-style concatenations (4-10 segments of different documents).")] = 200,
    stripped: Annotated[int, typer.Option(help="Windows of documents with their headings removed.")] = 100,
    debian_docs: Annotated[int, typer.Option(help="At most this many /usr/share/doc documents.")] = 500,
) -> None:
    """Prose that only content can segment: every join the same blank line as every paragraph
    break (Python language reference, standard-library docstrings, /usr/share/doc; never man
    pages, licence texts or the Debian FAQ). segment/train/prose.py lists sources and licences."""
    from blockrag.segment.train.data import write_jsonl
    from blockrag.segment.train.prose import build_prose as build

    with console.status("Reading the prose sources..."):
        instances = build(seed=seed, choi=choi, stripped=stripped, debian_limit=debian_docs)
    _summary(instances, write_jsonl(out, instances), out)


@app.command("build-dialogue")
def build_dialogue(
    out: Annotated[Path, typer.Option(help="JSONL file to write.")],
    split: Annotated[str, typer.Option(help="train (the prose sources of build-prose) or held_out (the Rust books).")] = "train",
    n: Annotated[int, typer.Option(help="Instances (4-8 conversations of different documents each).")] = 100,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Dialogue that only content can segment: conversations of two alternating speakers, one
    turn a line, joined with the alternation unbroken (segment/train/dialogue.py: sources, licences)."""
    from blockrag.segment.train.data import write_jsonl
    from blockrag.segment.train.dialogue import build_dialogue as build

    if split not in ("train", "held_out"):
        raise typer.BadParameter(f"--split must be train or held_out, got {split!r}")
    with console.status("Reading the dialogue sources..."):
        instances = build(split=split, n=n, seed=seed)
    _summary(instances, write_jsonl(out, instances), out)


def _summary(instances: list, written: int, out: Path) -> None:
    from blockrag.segment.train.data import summarize

    table = Table("category", *(k for k in next(iter(summarize(instances).values()), {})), title=f"{written} instances -> {out}")
    for category, stats in summarize(instances).items():
        table.add_row(category, *(f"{v:.0f}" if isinstance(v, float) else str(v) for v in stats.values()))
    console.print(table)


@app.command()
def train(
    data: Annotated[list[Path], typer.Option(help="Training JSONL (from build-data, build-prose); repeat for several.")],
    out: Annotated[Path, typer.Option(help="Directory for the trained head (head.safetensors, config.json).")],
    backbone: Annotated[str, typer.Option(help="all-minilm-l6-v2 (default, an encoder) or a causal LM path / hub id.")] = "all-minilm-l6-v2",
    validation: Annotated[float, typer.Option(help="Fraction of instances held out to choose the threshold.")] = 0.2,
    epochs: Annotated[int, typer.Option()] = 30,
    hidden: Annotated[int, typer.Option()] = 256,
    seed: Annotated[int, typer.Option()] = 0,
    similarity: Annotated[bool, typer.Option(help="Wide-window similarity features (segment/similarity.py).")] = True,
) -> None:
    """Train the boundary head on a frozen backbone; the threshold is chosen on a validation part."""
    from blockrag.segment.backbone import Backbone
    from blockrag.segment.boundary import BoundaryConfig, BoundaryModel
    from blockrag.segment.train.data import read_jsonl
    from blockrag.segment.similarity import DEFAULT_WIDTHS, PER_WIDTH
    from blockrag.segment.train.training import choose_threshold, featurize, probabilities, train_head

    instances = [instance for path in data for instance in read_jsonl(path)]
    widths = list(DEFAULT_WIDTHS) if similarity else []
    rng = random.Random(seed)
    order = list(range(len(instances)))
    rng.shuffle(order)
    n_val = max(1, round(len(instances) * validation))
    val, fit = [instances[i] for i in order[:n_val]], [instances[i] for i in order[n_val:]]
    model = Backbone.load(backbone)
    with _progress() as progress:
        task = progress.add_task("Backbone features (training)", total=len(fit))
        fit_set = featurize(model, fit, lambda d, t: progress.update(task, completed=d), widths=widths)
        task = progress.add_task("Backbone features (validation)", total=len(val))
        val_set = featurize(model, val, lambda d, t: progress.update(task, completed=d), widths=widths)
        task = progress.add_task("Training the head", total=epochs)
        head = train_head(fit_set, hidden=hidden, epochs=epochs, seed=seed,
                          progress=lambda d, t: progress.update(task, completed=d), similarity=PER_WIDTH * len(widths))
    threshold, scores = choose_threshold(probabilities(head, val_set), val_set)
    config = BoundaryConfig(backbone=backbone, backbone_kind=model.kind, feature_size=model.feature_size, hidden=hidden,
                            threshold=threshold, window=model.window, overlap=model.overlap,
                            similarity_widths=widths, training={
                                "data": " ".join(map(str, data)), "instances": len(fit), "validation_instances": len(val),
                                "candidates": len(fit_set.labels), "cuts": int(fit_set.labels.sum()),
                                "epochs": epochs, "seed": seed, "validation": scores.__dict__})
    BoundaryModel(model, head, config).save(out)
    console.print(f"trained on {len(fit)} instances ({len(fit_set.labels)} candidates, {int(fit_set.labels.sum())} cuts); "
                  f"threshold {threshold:.2f} on {len(val)} validation instances: Pk {scores.pk:.3f}, "
                  f"WindowDiff {scores.window_diff:.3f}, F1 {scores.f1:.3f}. Saved to {out}")


@app.command("train-sequence")
def train_sequence(
    data: Annotated[list[Path], typer.Option(help="Training JSONL (build-data, build-prose, build-dialogue); repeat for several.")],
    out: Annotated[Path, typer.Option(help="Directory for the trained head (head.safetensors, config.json).")],
    validation: Annotated[float, typer.Option(min=0.01, max=0.5, help="Fraction of instances held out to choose the threshold and suppression.")] = 0.125,
    epochs: Annotated[int, typer.Option(min=1)] = 12,
    hidden: Annotated[int, typer.Option(min=4, help="GRU width per direction.")] = 128,
    layers: Annotated[int, typer.Option(min=1, max=4)] = 2,
    lr: Annotated[float, typer.Option(min=0.0)] = 2e-3,
    pos_power: Annotated[float, typer.Option(min=0.0, max=1.0, help="Cuts weigh (non-cuts / cuts) to this power in the loss.")] = 0.5,
    seed: Annotated[int, typer.Option()] = 0,
    members: Annotated[int, typer.Option(min=1, max=8, help="Heads trained from seeds seed, seed+1, ...; their logits averaged.")] = 1,
    cache: Annotated[Path | None, typer.Option(help="Directory to keep the unit embeddings of each data file in (reused when the file is unchanged).")] = None,
) -> None:
    """Train the unit sequence head (format 6, segment/sequence.py): every unit embedded once by
    the frozen MiniLM, a bidirectional GRU over the units; the threshold and suppression radius
    are chosen on a validation part (lowest Pk + WindowDiff)."""
    from blockrag.segment.backbone import Backbone
    from blockrag.segment.sequence import SequenceConfig, UnitSequenceModel
    from blockrag.segment.train.data import read_jsonl
    from blockrag.segment.train.prose import forbidden
    from blockrag.segment.train.sequence_training import featurize_file, train_model

    files = {path: read_jsonl(path) for path in data}
    for path, instances in files.items():
        refused = [s for i in instances for s in i.sources if forbidden(s)]
        if refused:  # the hidden prose acceptance set's sources (segment/train/prose.py)
            raise typer.BadParameter(f"{path} holds text from {refused[0]}, which may not be training data")
    config = SequenceConfig(hidden=hidden, layers=layers, members=members)
    model = Backbone.load(config.backbone, window=config.window)
    config.hidden_size = model.hidden_size
    reads = None
    with _progress() as progress:
        for path, instances in files.items():
            task = progress.add_task(f"Embedding the units of {path.name}", total=len(instances))
            part = featurize_file(model, path, instances, config.unit_widths, cache,
                                  progress=lambda d, t, task=task: progress.update(task, completed=d))
            reads = part if reads is None else reads + part
        tasks = [progress.add_task(f"Training head {k + 1} of {members}", total=epochs) for k in range(members)]
        trained = train_model(reads, config, validation=validation, members=members, seed=seed, epochs=epochs, lr=lr,
                              pos_power=pos_power,
                              progress=lambda k: lambda d, t: progress.update(tasks[k], completed=d))
    fit, val, scores = trained.fit, trained.validation, trained.scores
    threshold, radius = trained.threshold, trained.radius
    cuts = int(sum(float(y.sum()) for y in fit.labels))
    config.threshold, config.suppress = threshold, radius
    config.training = {"data": " ".join(map(str, data)), "instances": len(fit.reads), "validation_instances": len(val.reads),
                       "candidates": sum(len(y) for y in fit.labels), "cuts": cuts, "epochs": epochs, "lr": lr,
                       "pos_power": pos_power, "seed": seed, "validation": scores.__dict__}
    UnitSequenceModel(model, trained.head, config).save(out)
    console.print(f"trained on {len(fit.reads)} instances ({cuts} cuts); threshold {threshold:.4f}, suppression {radius} "
                  f"on {len(val.reads)} validation instances: Pk {scores.pk:.3f}, WindowDiff {scores.window_diff:.3f}, "
                  f"F1 {scores.f1:.3f}. Saved to {out}")


@app.command()
def fuse(
    data: Annotated[list[Path], typer.Option(help="JSONL instances the model's net never trained on; repeat for several.")],
    out: Annotated[Path, typer.Option(help="Directory for the fused (format 5) head.")],
    model: Annotated[Path | None, typer.Option(help="A trained head directory whose net is kept; default: the shipped segmenter.")] = None,
    window: Annotated[bool, typer.Option(help="Window similarity features (format 5; similarity.py) beside the unit ones.")] = True,
    fusion_hidden: Annotated[int, typer.Option(help="Width of the MLP fusion; 0: a linear fusion over the similarity and the kind.")] = 16,
    steps: Annotated[int, typer.Option()] = 600,
    lr: Annotated[float, typer.Option()] = 0.01,
    weight_decay: Annotated[float, typer.Option()] = 1e-2,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Fit the similarity fusion of a trained head: its net stays as it is, and a term over the
    unit similarity features (each unit embedded alone), the window similarity features (a few
    units either side embedded together) and the kind and layout (an MLP; linear with
    --fusion-hidden 0) is fitted on --data (any fusion the head had is dropped); the threshold
    and suppression radius are chosen there. The defaults are the shipped head's recipe."""
    from dataclasses import replace

    from blockrag.segment.boundary import BoundaryModel
    from blockrag.segment.train.data import read_jsonl
    from blockrag.segment.default import default_model_dir
    from blockrag.segment.similarity import DEFAULT_UNIT_WIDTHS, DEFAULT_WINDOW_UNITS, PER_WIDTH
    from blockrag.segment.train.training import choose_decision, featurize, fit_fusion, probabilities

    base = BoundaryModel.load(model or default_model_dir())
    instances = [instance for path in data for instance in read_jsonl(path)]
    unit_widths = list(DEFAULT_UNIT_WIDTHS)
    window_units = list(DEFAULT_WINDOW_UNITS) if window else []
    with _progress() as progress:
        task = progress.add_task("Backbone features", total=len(instances))
        features = featurize(base.backbone, instances, lambda d, t: progress.update(task, completed=d),
                             widths=base.config.similarity_widths, unit_widths=unit_widths, window_units=window_units)
    head = fit_fusion(base.head, features, PER_WIDTH * (len(unit_widths) + len(window_units)), steps=steps, lr=lr,
                      weight_decay=weight_decay, seed=seed, hidden=fusion_hidden)
    threshold, suppress, scores = choose_decision(probabilities(head, features), features)
    net_training = base.config.training.get("net", base.config.training)
    config = replace(base.config, format=5 if window_units or fusion_hidden else 4, unit_widths=unit_widths,
                     window_units=window_units, fusion_hidden=fusion_hidden, suppress=suppress, threshold=threshold,
                     training={
                         "net": net_training, "fusion": {
                             "data": " ".join(map(str, data)), "instances": len(instances),
                             "candidates": len(features.labels), "cuts": int(features.labels.sum()), "steps": steps,
                             "lr": lr, "weight_decay": weight_decay, "seed": seed, "hidden": fusion_hidden,
                             "threshold_and_suppress_chosen_on": "the same instances", "scores": scores.__dict__}})
    BoundaryModel(base.backbone, head, config).save(out)
    console.print(f"fusion fitted on {len(instances)} instances ({len(features.labels)} candidates); threshold "
                  f"{threshold:.4f}, suppression {suppress}: Pk {scores.pk:.3f}, WindowDiff {scores.window_diff:.3f}, "
                  f"F1 {scores.f1:.3f}. Saved to {out}")


@app.command("eval")
def evaluate(
    data: Annotated[Path, typer.Option(help="JSONL to evaluate on (from build-data, ideally other sources).")],
    model: Annotated[Path | None, typer.Option(help="Trained head directory; default: the shipped segmenter.")] = None,
    granularity: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.5,
    out: Annotated[Path | None, typer.Option(help="Also write the tables as JSON here.")] = None,
    families: Annotated[bool, typer.Option(help="One table per family (code, docs, dialogue, prose/concat, prose/heading-free) and a granularity sweep each.")] = True,
) -> None:
    """Pk, WindowDiff and boundary F1 of the segmenter and of the baselines, on the same data, for
    each family apart; then blocks per 1K tokens and Pk at granularity 0, 0.25, 0.5, 0.75, 1."""
    from blockrag.segment.train.data import read_jsonl
    from blockrag.segment.default import load_default_segmenter, load_segmenter
    from blockrag.segment.train.evaluation import family_tables, granularity_sweep, quality_table

    instances = read_jsonl(data)
    segmenter = load_segmenter(model, len) if model else load_default_segmenter(len)
    report: dict = {}
    with console.status("Scoring...") as status:
        if families:
            tables = family_tables(instances, segmenter, granularity, progress=lambda name: status.update(f"Scoring {name}..."))
        else:
            tables = {"all": quality_table(instances, segmenter, granularity,
                                           progress=lambda name: status.update(f"Scoring {name}..."))}
    for name, rows in tables.items():
        n = sum(1 for i in instances if not families or _family(i) == name)
        table = Table("method", "Pk", "WindowDiff", "precision", "recall", "F1", "seconds",
                      title=f"{name}: {n} instances of {data} (lower Pk/WindowDiff is better)")
        for r in rows:
            s = r.scores
            table.add_row(r.name, f"{s.pk:.3f}", f"{s.window_diff:.3f}", f"{s.precision:.3f}", f"{s.recall:.3f}",
                          f"{s.f1:.3f}", f"{r.seconds:.1f}")
        console.print(table)
        report[name] = {"methods": [{"method": r.name, **r.scores.__dict__, "seconds": r.seconds} for r in rows]}
        if families:
            with console.status(f"Granularity sweep on {name}..."):
                tokenizer = segmenter.model.backbone.tokenizer
                sweep = granularity_sweep([i for i in instances if _family(i) == name], segmenter,
                                          count_tokens=lambda t: len(tokenizer(t, add_special_tokens=False)["input_ids"]))
            table = Table("granularity", "blocks per 1K tokens", "Pk",
                          title=f"{name}: granularity sweep (learned; tokens of its backbone)")
            for point in sweep:
                table.add_row(f"{point.granularity:.2f}", f"{point.blocks_per_1k_tokens:.2f}", f"{point.pk:.3f}")
            console.print(table)
            report[name]["sweep"] = [point.__dict__ for point in sweep]
    if out:
        out.write_text(json.dumps(report, indent=2))


@app.command("score-words")
def score_words_command(
    data: Annotated[Path, typer.Option(help="A prose-dev style JSONL (text, boundaries as character offsets).")],
    model: Annotated[Path | None, typer.Option(help="Trained head directory; default: the shipped segmenter.")] = None,
    baselines: Annotated[bool, typer.Option(help="Also score no split, paragraph split and embedding similarity.")] = True,
    out: Annotated[Path | None, typer.Option(help="Also write the rows as JSON here.")] = None,
) -> None:
    """Pk, WindowDiff (macro) and boundary F1 (micro, within 10 words) in WORDS, as
    /work/shared/segmentation/README.md scores prose-dev: the segmenter at granularity 0, 0.25,
    0.5, 0.75 and 1, then the baselines, on the same instances."""
    from blockrag.segment.default import load_default_segmenter, load_segmenter
    from blockrag.segment.learned import decide, threshold_for
    from blockrag.segment.train.baselines import EmbeddingSimilarity, no_split, paragraph_split
    from blockrag.segment.train.evaluation import GRANULARITIES
    from blockrag.segment.train.word_scores import read_reference, score_words

    try:
        instances = read_reference(data)
    except (OSError, ValueError, KeyError) as e:
        raise typer.BadParameter(f"{data}: not a JSONL of objects with text and boundaries ({e})") from e
    segmenter = load_segmenter(model, len) if model else load_default_segmenter(len)
    probabilities = {}
    with console.status("Reading the texts..."):
        texts = [text for text, _ in instances]
        for text, read in zip(texts, segmenter.model.probabilities_many(texts)):
            probabilities[text] = read
    config = segmenter.model.config
    methods = [(f"learned, granularity {g}", lambda text, g=g: decide(
        *probabilities[text], threshold_for(config.threshold, g), config.suppress)) for g in GRANULARITIES]
    if baselines:
        methods += [("no split", no_split), ("paragraph split", paragraph_split),
                    ("embedding similarity", EmbeddingSimilarity(segmenter.model.backbone.embed))]
    table = Table("method", "Pk", "WindowDiff", "precision", "recall", "F1",
                  title=f"{len(instances)} instances of {data}, scored in words (lower Pk/WindowDiff is better)")
    rows = []
    for name, method in methods:
        with console.status(f"Scoring {name}..."):
            scores = score_words(instances, method)
        rows.append({"method": name, **scores.__dict__})
        table.add_row(name, *(f"{v:.3f}" for v in scores.__dict__.values()))
    console.print(table)
    if out:
        out.write_text(json.dumps(rows, indent=2))


def _family(instance) -> str:
    from blockrag.segment.train.evaluation import family

    return family(instance)


@app.command()
def cut(
    path: Annotated[Path, typer.Argument(help="A text file.")],
    granularity: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.5,
    max_block_tokens: Annotated[int, typer.Option(min=8)] = 256,
    min_block_tokens: Annotated[int, typer.Option(min=0)] = 32,
) -> None:
    """Show the blocks the shipped segmenter makes of a file (tokens of the default model)."""
    from blockrag.models import load_tokenizer
    from blockrag.prompt import PromptTemplate
    from blockrag.segment import SegmentOptions
    from blockrag.segment.default import load_default_segmenter

    template = PromptTemplate(load_tokenizer())
    segmenter = load_default_segmenter(lambda text: len(template.block_ids(text)))
    spans = segmenter.segment(path.read_text(encoding="utf-8"), SegmentOptions(
        max_block_tokens=max_block_tokens, min_block_tokens=min_block_tokens, granularity=granularity))
    for i, span in enumerate(spans):
        console.rule(f"block {i + 1}: {span.token_count} tokens, characters {span.start}-{span.end}")
        console.print(span.text, markup=False, highlight=False)
