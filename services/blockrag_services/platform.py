"""The embedded platform: a local Ray, the five applications, the metrics exporter.

`blockrag up` runs this in the foreground. Metrics: every process on the node records into
PROMETHEUS_MULTIPROC_DIR (set here before Ray starts its workers, which inherit it) and the
exporter started here serves the aggregate (blockrag.telemetry.exporter says why).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blockrag import defaults
from blockrag.errors import BlockRAGError, PlatformStartError
from blockrag_services.config import PlatformConfig, platform_home
from blockrag_services.drain import DEFAULT_GRACE_S, DRAIN_ENV, mark_draining, wait_idle
from blockrag_services.server_tls import ServerTLS


@dataclass(frozen=True)
class PlatformOptions:
    """How the embedded platform starts: where it listens, Ray's CPUs, the settings every
    application shares (``config``, each service's resources in ``config.services``)."""

    host: str = defaults.LOCAL_HOST
    grpc_port: int = defaults.GRPC_PORT
    http_port: int = defaults.HTTP_PORT
    metrics_port: int = defaults.METRICS_PORT
    num_cpus: int | None = None  # None: all of the machine's
    config: PlatformConfig = field(default_factory=PlatformConfig)
    metrics_dir: Path | None = None  # None: under the platform home
    # TLS on grpc_port (server_tls.py); Ray's plaintext gRPC port then moves to internal_grpc_port
    # (0: any free port), which must stay closed to the outside
    tls: ServerTLS | None = None
    internal_grpc_port: int = 0

    def args(self) -> dict[str, Any]:
        """The Serve args of every application (each builder takes its service's resources)."""
        return self.config.to_args()


def _check_free(what: str, host: str, port: int, option: str) -> None:
    """Fail before starting anything when a port is taken (Ray would fail deep in an actor)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise PlatformStartError(f"the {what} port {port} is not free ({e.strerror}): is another platform "
                                     f"running? stop it, or pick another port with {option}") from None


def _wait_serving(port: int, timeout_s: float = 30.0) -> None:
    """Until grpc.health reports the whole platform SERVING on the gRPC port. The proxy's health
    servicer reads the applications' status every 2 s (health.py), so right after they run it may
    still say NOT_SERVING: ready (the CLI's ready file, a probe) must not come before it."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass  # the proxy may not answer yet
            if time.monotonic() > deadline:
                raise PlatformStartError(f"the platform's services run, but its health service did not report "
                                         f"SERVING within {timeout_s:.0f} s (Ray's logs: /tmp/ray/session_latest/logs)")
            time.sleep(0.2)


def _free_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::", 0))
        return s.getsockname()[1]


def _wait_listening(host: str, port: int, timeout_s: float = 10.0) -> None:
    """Until the proxy's TLS listener accepts connections (server_tls.add_tls_to_server runs in
    the proxy's process: a failure there shows only in Ray's logs)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise PlatformStartError(f"the gRPC proxy is not listening with TLS on {host}:{port} (Ray's logs: "
                                         "/tmp/ray/session_latest/logs)") from None
            time.sleep(0.2)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class LocalPlatform:
    def __init__(self, options: PlatformOptions):
        self.options = options
        self.exporter = None
        self.metrics_port = options.metrics_port
        self.drain_file: Path | None = None
        self.serve_grpc_port = options.grpc_port  # Ray's plaintext port: an internal one under TLS

    @property
    def grpc_address(self) -> str:
        """Where clients call: with TLS, the TLS listener."""
        return f"{self.options.host}:{self.options.grpc_port}"

    @property
    def metrics_address(self) -> str:
        return f"{self.options.host}:{self.metrics_port}"

    def start(self, progress: Callable[[str], None] = lambda _: None) -> None:
        from blockrag.telemetry.exporter import MULTIPROC_ENV, prepare_multiprocess_dir

        o = self.options
        if o.tls is not None:
            o.tls.check()  # a bad file fails here, naming it, not in the proxy's log
            _check_free("gRPC (TLS)", o.host, o.grpc_port, "--grpc-port")
            self.serve_grpc_port = o.internal_grpc_port or _free_port()
            os.environ.update(o.tls.env(self.grpc_address))  # before Ray starts: the proxy inherits it
        # Serve's gRPC proxy binds every interface ([::]); the others bind the host given
        _check_free("gRPC", "::", self.serve_grpc_port, "--grpc-port")
        _check_free("HTTP", o.host, o.http_port, "--http-port")
        _check_free("metrics", o.host, o.metrics_port, "--metrics-port")
        metrics_dir = prepare_multiprocess_dir(o.metrics_dir or platform_home() / "metrics")
        os.environ[MULTIPROC_ENV] = str(metrics_dir)  # before Ray starts: workers inherit it
        # a fresh path per start, so that no earlier platform's mark is found (drain.py)
        self.drain_file = Path(tempfile.mkdtemp(prefix="blockrag-drain-")) / "draining"
        os.environ[DRAIN_ENV] = str(self.drain_file)
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local cluster on loopback
        import ray
        from ray import serve
        from ray.serve.config import HTTPOptions

        from blockrag.telemetry.exporter import MetricsExporter
        from blockrag_services.app import BUILDERS
        from blockrag_services.grpc_options import grpc_options

        logging.getLogger("ray.serve").setLevel(logging.WARNING)  # the CLI reports progress itself
        progress("starting Ray")
        handler = signal.getsignal(signal.SIGTERM) if _main_thread() else None
        ray.init(num_cpus=o.num_cpus, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
                 configure_logging=False)
        if callable(handler):  # Ray's core installs a SIGTERM handler that aborts: the caller's comes back
            signal.signal(signal.SIGTERM, handler)
        self.exporter = MetricsExporter(metrics_dir, host=o.host, port=o.metrics_port)
        self.metrics_port = self.exporter.start()
        try:
            serve.start(http_options=HTTPOptions(host=o.host, port=o.http_port),
                        grpc_options=grpc_options(self.serve_grpc_port))
            progress("deploying segmentation, precompute, cache_index, generation, admin (loading the model)")
            targets = [serve.RunTarget(build(o.args()), name=name, route_prefix=f"/{name}")
                       for name, build in BUILDERS.items()]
            serve.run_many(targets, wait_for_applications_running=True)
            progress("waiting for the health service to report SERVING")
            _wait_serving(self.serve_grpc_port)
            if o.tls is not None:
                _wait_listening(o.host, o.grpc_port)
        except BlockRAGError:
            raise
        except Exception as e:  # Ray's errors carry remote tracebacks: keep their last line
            last = [line for line in str(e).splitlines() if line.strip()][-1:] or [type(e).__name__]
            raise PlatformStartError(f"the platform did not start: {last[0].strip()} (Ray's logs: "
                                     f"/tmp/ray/session_latest/logs)") from None

    def drain(self, grace_s: float = DEFAULT_GRACE_S) -> int:
        """Refuse new calls from the port (UNAVAILABLE) and wait until the requests in flight
        finish, at most ``grace_s``; how many were still in flight then (drain.py)."""
        import ray

        if self.drain_file is None or not ray.is_initialized():
            return 0
        mark_draining(self.drain_file)
        return wait_idle(grace_s)

    def stop(self) -> None:
        import ray
        from ray import serve

        if ray.is_initialized():
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
        if self.exporter is not None:
            self.exporter.stop()
            self.exporter = None
        if self.drain_file is not None:
            shutil.rmtree(self.drain_file.parent, ignore_errors=True)
            self.drain_file = None

    def wait(self) -> None:
        """Until Ctrl-C (KeyboardInterrupt) or SIGTERM (the CLI turns it into KeyboardInterrupt;
        then drain, stop)."""
        while True:
            time.sleep(3600)
