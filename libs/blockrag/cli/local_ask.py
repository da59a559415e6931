"""`blockrag local-ask`: answer a question over documents with block attention, in one process
(no platform: the engine and a local KV directory)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from blockrag.documents import read_documents
from blockrag.segment import split_paragraphs

console = Console()


def local_ask(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    docs: Annotated[list[Path] | None, typer.Option("--docs", help="Files or directories (.md/.txt/.rst); default: the bundled samples.")] = None,
    model: Annotated[str | None, typer.Option(help="Hub id, local directory or .gguf file; default: the embedded SmolLM2-135M-Instruct.")] = None,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 ...")] = "cpu",
    adapter: Annotated[str, typer.Option(help="Distillation adapter: 'default' (shipped for the embedded model), "
                                              "'none', or a file from `blockrag model distill`.")] = "default",
    max_new_tokens: Annotated[int, typer.Option(min=1, max=4096)] = 64,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 is greedy.")] = 0.0,
    cache_dir: Annotated[Path | None, typer.Option(help="Where block KV is kept between runs; default: $BLOCKRAG_HOME/kv.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Encode every block now; keep nothing.")] = False,
    compare_full: Annotated[bool, typer.Option(help="Also time a full-attention prefill of the same prompt.")] = True,
    kv_compression: Annotated[str, typer.Option(
        help="How the KV cache holds blocks: none, int8_head, int8_token or fp8_head (the platform's "
             "kv_compression). Gated first as the platform's Precompute gates it at start: answers over "
             "compressed KV of a few held-out questions must not drift past its KL bound.")] = "none",
) -> None:
    """Answer QUESTION over documents: blocks are encoded once (or read from the KV cache),
    only the question is prefilled, the answer streams."""
    from blockrag.kvcache.compression import KVCompression
    from blockrag.kvcache.compression_gate import gate_runtime
    from blockrag.kvcache.local_store import LocalDirectoryStore
    from blockrag.model_runtime import ModelRuntime, ModelSpec
    from blockrag.models.default import model_home
    from blockrag.pipeline import LocalPipeline
    from blockrag.samples import sample_paths
    from blockrag_services.config import PlatformConfig

    # the platform's setting and gate (PlatformConfig: kv_compression, kv_compression_gate_questions,
    # kv_compression_max_kl), checked as a deployment checks them; a bad name is an InvalidRequestError
    settings = PlatformConfig.from_args({"kv_compression": kv_compression})
    compression = settings.kv_compression
    if compression is not KVCompression.NONE and no_cache:
        raise typer.BadParameter("compresses the KV kept in the cache directory; --no-cache keeps none",
                                 param_hint="--kv-compression")
    documents = read_documents(docs or [Path(p) for p in sample_paths()])
    passages = [p for text in documents.values() for p in split_paragraphs(text)]
    if not question.strip():
        raise typer.BadParameter("the question is empty", param_hint="QUESTION")

    with console.status("Loading the model and checking its cached path against the reference..."):
        runtime = ModelRuntime.load(ModelSpec(model, dtype, device, adapter))
        engine, tokenizer, loaded = runtime.engine, runtime.tokenizer, runtime.load_seconds
    gate = engine.gate_report
    console.print(f"[dim]model {model or 'smollm2-135m-instruct'} ({dtype}, {device}, adapter {adapter}) ready in {loaded:.1f} s; "
                  f"correctness gate passed (key error {gate.key_error:.1e}, logit error {gate.logit_error:.1e})[/dim]")

    if compression is not KVCompression.NONE:
        with console.status(f"Gating kv_compression {compression} on {settings.kv_compression_gate_questions} "
                            f"held-out questions..."):
            report = gate_runtime(runtime, compression, settings.kv_compression_gate_questions,
                                  settings.kv_compression_max_kl)
        if report is not None:  # None: the platform's default gates no questions
            console.print(f"[dim]kv_compression {compression} passed its gate: mean answer-token KL {report.kl:.5f} "
                          f"(bound {settings.kv_compression_max_kl:g}) over {report.questions} questions[/dim]")

    store = None if no_cache else LocalDirectoryStore(cache_dir or model_home().parent / "kv")
    pipeline = LocalPipeline(engine, tokenizer, store, compression=compression)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(f"Encoding blocks of {len(documents)} documents", total=None)
        kvs, blocks = pipeline.context_blocks(
            passages, progress=lambda done, total: progress.update(task, completed=done, total=total))

    console.print(f"[bold]Q:[/bold] {question}")
    console.print("[bold]A:[/bold] ", end="")
    answer = pipeline.answer(kvs, question, max_new_tokens=max_new_tokens, temperature=temperature)
    for piece in answer:
        console.print(piece, end="", highlight=False, markup=False)
        console.file.flush()
    console.print()

    stats = answer.stats
    table = Table(title="Cache statistics", show_header=False, title_justify="left")
    table.add_row("context blocks", f"{blocks.blocks} ({blocks.from_store} from the KV cache, "
                  f"{blocks.encoded} encoded now in {blocks.encode_seconds * 1000:.0f} ms"
                  + (f", {blocks.corrupt} corrupt entries replaced" if blocks.corrupt else "") + ")")
    table.add_row("prompt tokens", f"{stats.prompt_tokens}: {stats.cached_tokens} from cached blocks, "
                  f"{stats.computed_tokens} computed (the question)")
    table.add_row("time to first token", f"{stats.ttft_ms:.0f} ms")
    if compare_full:
        prompt = [t for kv in kvs for t in kv.token_ids] + pipeline.template.final_ids(question)
        started = time.perf_counter()
        engine.full_prefill(prompt, logits_to_keep=1)
        full_ms = (time.perf_counter() - started) * 1000
        table.add_row("full-attention prefill", f"{full_ms:.0f} ms ({full_ms / stats.ttft_ms:.1f}x the cached time to first token)")
    if stats.new_tokens > 1:
        rate = (stats.new_tokens - 1) / max((stats.total_ms - stats.ttft_ms) / 1000, 1e-9)
        table.add_row("decoding", f"{stats.new_tokens} tokens, {rate:.1f} tokens/s")
    console.print(table)
