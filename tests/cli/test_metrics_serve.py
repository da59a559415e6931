"""`blockrag metrics serve` exports what other processes recorded in the multiprocess directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from fixtures.ports import free_port

BLOCKRAG = str(Path(sys.executable).parent / "blockrag")
RECORD = "from blockrag.telemetry import observe_request; observe_request('generation', 'Generate', 'NOT_FOUND')"


def test_serves_the_node_metrics(tmp_path):
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    for _ in range(2):
        subprocess.run([sys.executable, "-c", RECORD], env=env, check=True, timeout=120)
    port = free_port()
    server = subprocess.Popen([BLOCKRAG, "metrics", "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, text = time.monotonic() + 60, ""
        while time.monotonic() < deadline and not text:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                time.sleep(0.3)
        line = 'blockrag_request_errors_total{code="NOT_FOUND",method="Generate",service="generation"} 2.0'
        assert line in text
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(30) == 0


def test_refuses_a_missing_directory(tmp_path):
    result = subprocess.run([BLOCKRAG, "metrics", "serve", "--dir", str(tmp_path / "nope")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1 and "is not a directory" in " ".join(result.stderr.split())


def test_stops_on_sigterm_even_when_started_with_sigint_ignored(tmp_path):
    """Kubernetes stops pods with SIGTERM; a shell's background job starts with SIGINT ignored."""
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    port = free_port()
    for signum in (signal.SIGTERM, signal.SIGINT):
        server = subprocess.Popen([BLOCKRAG, "metrics", "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
                    break
                except OSError:
                    time.sleep(0.3)
        finally:
            server.send_signal(signum)
            assert server.wait(30) == 0
