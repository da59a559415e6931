"""The Prometheus config and alert rules in deploy/prometheus are valid and their unit tests pass."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing; install it with: apt-get install prometheus")
    # promtool resolves rule_files relative to the file, but run from there anyway.
    return subprocess.run(
        [binary, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "alerts.yml"),
        ("test", "rules", "alerts.test.yml"),
    ],
    ids=["check-config", "check-rules", "test-rules"],
)
def test_promtool(args):
    result = promtool(*args)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"


def test_config_scrapes_the_default_metrics_port():
    from blockrag.telemetry.exporter import DEFAULT_METRICS_PORT

    config = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    assert f"127.0.0.1:{DEFAULT_METRICS_PORT}" in config
    assert "job_name: blockrag" in config
