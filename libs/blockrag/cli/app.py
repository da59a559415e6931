"""Entry point of the `blockrag` command."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from blockrag.cli import keys, metrics, model, segment
from blockrag.cli.ask import ask
from blockrag.cli.drain import drain
from blockrag.cli.ingest import ingest
from blockrag.cli.local_ask import local_ask
from blockrag.cli.up import up
from blockrag.errors import BlockRAGError

app = typer.Typer(help="BlockRAG: retrieval-augmented generation with block attention.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.command()(up)
app.command()(drain)
app.command()(ingest)
app.command()(ask)
app.command("local-ask")(local_ask)
app.add_typer(model.app, name="model")
app.add_typer(metrics.app, name="metrics")
app.add_typer(segment.app, name="segment")
app.add_typer(keys.app, name="keys")


def run(typer_app: typer.Typer) -> None:
    """Run a CLI; library and platform errors become one red line and exit status 1, no traceback."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars and spinners speak for the model
    try:
        typer_app()
    except BlockRAGError as e:
        Console(stderr=True).print(f"[red]error:[/red] {e}")
        sys.exit(1)


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()
