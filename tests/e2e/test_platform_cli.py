"""The CLIs against the running platform: `blockrag ingest/ask` and `blockrag-admin`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def run(platform, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="160", BLOCKRAG_ADDRESS=platform.grpc)
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=env, timeout=300)


def test_ingest_then_ask_twice(platform, tmp_path):
    (tmp_path / "harbour.md").write_text("# Harbour\n\nThe harbour master of Tolvik is Ada Brenn.\n")
    ingest = run(platform, "blockrag", "ingest", str(tmp_path), "--collection", "cli")
    assert ingest.returncode == 0, ingest.stderr
    assert "Ingested 1 documents into cli" in ingest.stdout and "1 blocks" in ingest.stdout
    first = run(platform, "blockrag", "ask", "Who is the harbour master of Tolvik?", "--collection", "cli")
    second = run(platform, "blockrag", "ask", "Who is the harbour master of Tolvik?", "--collection", "cli")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "1 from store" in first.stdout and "1 from memory" in second.stdout
    assert "time to first token" in second.stdout


def test_ask_reports_errors_in_one_line(platform):
    result = run(platform, "blockrag", "ask", "Why?", "--block", "blk_missing")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: NOT_FOUND: unknown block id(s) blk_missing")
    assert "Traceback" not in result.stderr


def test_admin_health_models_and_cache(platform, ingested):
    health = run(platform, "blockrag-admin", "health")
    assert health.returncode == 0, health.stdout + health.stderr
    for service in ("segmentation", "precompute", "cache_index", "generation", "admin"):
        assert service in health.stdout
    assert "unhealthy" not in health.stdout
    models = run(platform, "blockrag-admin", "models", "list")
    assert models.returncode == 0 and ingested.model_version[:16] in models.stdout and "yes" in models.stdout
    stats = run(platform, "blockrag-admin", "cache", "stats")
    assert stats.returncode == 0 and "KV entries" in stats.stdout and "Generation replicas" in stats.stdout


def test_admin_on_a_closed_port_says_what_to_do(tmp_path):
    from fixtures.ports import free_port

    env = dict(os.environ, BLOCKRAG_ADDRESS=f"127.0.0.1:{free_port()}")
    result = subprocess.run([str(BIN / "blockrag-admin"), "health"], capture_output=True, text=True, env=env,
                            timeout=120)
    line = " ".join(result.stderr.split())  # the console wraps long lines
    assert result.returncode == 1 and line.startswith(f"error: unreachable: nothing answers at {env['BLOCKRAG_ADDRESS']}")
    assert "check --address or $BLOCKRAG_ADDRESS" in line and "blockrag up" in line and "Traceback" not in line
