"""The per-node metrics exporter: one HTTP endpoint serving every local process's metrics.

Why prometheus_client's multiprocess mode and not ``ray.util.metrics``: Ray's metric API
prefixes every name with ``ray_`` (our names and dashboards say ``blockrag_...``) and its
histograms reach Prometheus only as approximations, re-aggregated by Ray's metrics agent, so
the quantiles computed from them are not exact. Instead every process of a node (each Ray
Serve replica is its own worker process) starts with ``PROMETHEUS_MULTIPROC_DIR`` pointing at one
shared directory; prometheus_client then writes each metric to memory-mapped files there (one
per process and metric type), and this exporter merges those files on every scrape with
``MultiProcessCollector``: counters and histograms are summed exactly, gauges follow their
``multiprocess_mode``.

Order matters: ``prepare_multiprocess_dir`` runs first (it deletes files left from a previous
run), then the variable is set in the workers' environment before they import
prometheus_client (it chooses its value class at import), then the exporter starts.

In Kubernetes each pod (Ray head or worker) is one node in this sense: it runs one exporter on
``DEFAULT_METRICS_PORT`` over its own emptyDir, and a PodMonitor scrapes every pod.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from blockrag.defaults import METRICS_PORT as DEFAULT_METRICS_PORT

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(path: str | Path) -> Path:
    """Create ``path`` or clear the metric files (``*.db``) a previous run left in it.

    Call it before any worker process starts: files of a running process must not be removed.
    Only ``*.db`` files are deleted, so a mistaken path loses nothing else.
    """
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    return directory


def mark_process_dead(pid: int, multiproc_dir: str | Path) -> None:
    """Drop a dead process's share of the ``live*`` gauges (e.g. replica cache sizes).

    Counters and histograms of dead processes are kept on purpose: they are cumulative.
    """
    multiprocess.mark_process_dead(pid, str(multiproc_dir))


class MetricsExporter:
    """Serves GET /metrics with the aggregate of every process writing to ``multiproc_dir``."""

    def __init__(
        self, multiproc_dir: str | Path, host: str = "127.0.0.1", port: int = DEFAULT_METRICS_PORT
    ) -> None:
        self.multiproc_dir = Path(multiproc_dir)
        self.host = host
        self.requested_port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (differs from the requested one when that was 0)."""
        if self._server is None:
            raise RuntimeError("the exporter is not running")
        return self._server.server_port

    @property
    def url(self) -> str:
        """The scrape URL, ``http://host:port/metrics``."""
        return f"http://{self.host}:{self.port}/metrics"

    def start(self) -> int:
        """Start serving in a daemon thread; returns the bound port."""
        if self._server is not None:
            raise RuntimeError("the exporter is already running")
        if not self.multiproc_dir.is_dir():
            raise FileNotFoundError(
                f"multiprocess directory {self.multiproc_dir} does not exist; "
                "call prepare_multiprocess_dir() first"
            )
        # A registry of its own: the default one holds this process's metrics only.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.multiproc_dir))
        self._server, self._thread = start_http_server(
            self.requested_port, addr=self.host, registry=registry
        )
        return self.port

    def stop(self) -> None:
        """Stop serving and release the port; a no-op when not running."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server, self._thread = None, None

    def __enter__(self) -> MetricsExporter:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_exporter(
    host: str = "127.0.0.1", port: int = DEFAULT_METRICS_PORT, multiproc_dir: str | Path | None = None
) -> tuple[MetricsExporter, int]:
    """Start a ``MetricsExporter``; returns it (``.stop()`` ends it) and its bound port.

    ``multiproc_dir`` defaults to ``$PROMETHEUS_MULTIPROC_DIR``.
    """
    if multiproc_dir is None:
        multiproc_dir = os.environ.get(MULTIPROC_ENV)
        if not multiproc_dir:
            raise ValueError(f"no multiproc_dir given and {MULTIPROC_ENV} is not set")
    exporter = MetricsExporter(multiproc_dir, host=host, port=port)
    return exporter, exporter.start()
