"""The distillation and precompute-queue metrics: what the helpers record, and that a training
worker's last values outlive its process under the per-node exporter (multiprocess mode)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

from blockrag.telemetry import metrics
from blockrag.telemetry.exporter import prepare_multiprocess_dir

# A Ray Train worker's share: two steps of the shared scope's run, then its evaluation; it exits.
WORKER = """
from blockrag.telemetry import metrics
assert metrics.multiprocess_active()
metrics.observe_distill_step("", step=1, total_steps=4, loss=2.5, kl=0.75, tokens=300)
metrics.observe_distill_step("", step=2, total_steps=4, loss=2.0, kl=float("nan"), tokens=200)
metrics.set_distill_evaluation("", {"kl": 0.1, "accuracy": 0.6, "active_kl": 0.2, "active_accuracy": 0.5,
                                    "base_kl": 0.3, "base_accuracy": 0.4, "questions": 10.0})
"""


def sample(registry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_a_finished_workers_steps_and_evaluation_stay_visible(tmp_path):
    directory = prepare_multiprocess_dir(tmp_path / "mp")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    started = time.time()
    subprocess.run([sys.executable, "-c", WORKER], env=env, check=True, timeout=60)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))  # what the exporter serves

    shared = {"tenant": "shared"}
    assert sample(registry, "blockrag_distill_steps_total", **shared) == 2
    assert sample(registry, "blockrag_distill_tokens_total", **shared) == 500
    assert sample(registry, "blockrag_distill_loss", **shared) == 2.0
    assert sample(registry, "blockrag_distill_kl", **shared) == 0.75  # a NaN KL leaves the last one
    assert sample(registry, "blockrag_distill_progress", **shared) == 0.5
    scores = {m: (sample(registry, "blockrag_distill_eval_kl", tenant="shared", model=m),
                  sample(registry, "blockrag_distill_eval_accuracy", tenant="shared", model=m))
              for m in ("candidate", "active", "base")}
    assert scores == {"candidate": (0.1, 0.6), "active": (0.2, 0.5), "base": (0.3, 0.4)}
    # what dashboards pick the newest node's values by
    assert started <= sample(registry, "blockrag_distill_updated_timestamp_seconds", **shared) <= time.time()


def test_precompute_queue_counts_requests_inside_each_state():
    queue = metrics.precompute_queue()
    assert sample(REGISTRY, "blockrag_precompute_requests", state="encoding") is not None  # exists at once
    waiting = sample(REGISTRY, "blockrag_precompute_requests", state="waiting")
    with queue["waiting"].track_inprogress(), queue["waiting"].track_inprogress():
        assert sample(REGISTRY, "blockrag_precompute_requests", state="waiting") == waiting + 2
    assert sample(REGISTRY, "blockrag_precompute_requests", state="waiting") == waiting


def test_distill_helpers_reject_bad_input():
    with pytest.raises(ValueError, match="step=5"):
        metrics.observe_distill_step("acme", step=5, total_steps=4, loss=1.0, kl=None, tokens=1)
    with pytest.raises(ValueError, match="status"):
        metrics.observe_distill_run("pending")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="action"):
        metrics.observe_version_change("acme", "demote", None)  # type: ignore[arg-type]
