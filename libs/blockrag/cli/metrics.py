"""`blockrag metrics serve`: the per-node metrics exporter, for nodes `blockrag up` did not start
(a Ray cluster from `serve deploy`, a Kubernetes pod): every process on the node records into
PROMETHEUS_MULTIPROC_DIR and this serves the sum for Prometheus to scrape."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from blockrag.defaults import METRICS_PORT, METRICS_SERVE_HOST

app = typer.Typer(help="The Prometheus metrics of the services on this node.", no_args_is_help=True)


@app.command()
def serve(
    directory: Annotated[Path, typer.Option("--dir", envvar="PROMETHEUS_MULTIPROC_DIR",
                                            help="The directory the services record into.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = METRICS_SERVE_HOST,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = METRICS_PORT,
) -> None:
    """Serve GET /metrics until Ctrl-C."""
    from blockrag.errors import InvalidRequestError
    from blockrag.telemetry.exporter import MetricsExporter

    if not directory.is_dir():
        raise InvalidRequestError(f"{directory} is not a directory: create it (empty) before the services start, "
                                  f"and give the same path to them as PROMETHEUS_MULTIPROC_DIR")
    stop = threading.Event()
    # explicit handlers: Kubernetes stops a pod with SIGTERM, and a process started in the
    # background by a shell inherits SIGINT ignored, so Python's own Ctrl-C handling is not enough
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with MetricsExporter(directory, host=host, port=port) as exporter:
        Console().print(f"serving the metrics of {directory} at {exporter.url}")
        stop.wait()
