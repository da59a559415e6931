"""The Ray Train job of one distillation run: a TorchTrainer with one worker whose loop runs the
DistillationJob (setup / train step / evaluate / save checkpoint, in blockrag.distill.job) and
reports every progress record through ray.train.report.

Checkpoints go to the platform's object store, not Ray's storage: a worker that dies is restarted
by Ray Train (FailureConfig) and its job resumes from the run's last checkpoint, as does a run
resubmitted after the platform restarts (runner.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from blockrag.errors import BlockRAGError
from blockrag.registry import Run
from blockrag_services.config import PlatformConfig, platform_home

MAX_FAILURES = 2  # worker crashes (killed, out of memory) retried, each resuming from the checkpoint
HEALTH_CHECK_INTERVAL_S = "0.2"  # short runs end sooner when the controller polls often (Ray: 2 s)


def train_loop_per_worker(loop_config: dict) -> None:
    """One run to its end in this worker (Ray Train calls it with the trainer's loop config)."""
    import ray.train
    import torch
    from transformers.utils import logging as hf_logging

    from blockrag.distill.job import DistillationJob, JobStores

    config = PlatformConfig.from_args(loop_config["platform"])
    cpus = config.distill.num_cpus
    torch.set_num_threads(int(cpus) if cpus >= 1 else os.cpu_count() or 1)
    hf_logging.disable_progress_bar()
    stores = JobStores.open(config.database, config.object_store)
    try:
        DistillationJob(loop_config["run_id"], stores, report=lambda record: ray.train.report(_reportable(record))).run()
    finally:
        stores.close()


def _reportable(record: dict) -> dict:
    """Ray's result table takes numbers and strings."""
    return {k: v for k, v in record.items() if isinstance(v, int | float | str) or v is None}


def storage_path(config: PlatformConfig) -> str:
    """Where Ray Train keeps its run directories: the configured path, else next to a local
    object store (the platform's state directory), else under the platform home."""
    if config.distill.storage_path:
        return config.distill.storage_path
    store = config.object_store
    parts = urlsplit(store)
    if parts.scheme in ("", "file"):
        return str(Path(parts.path if parts.scheme else store).expanduser().resolve().parent / "train")
    return str(platform_home() / "train")


def make_trainer(run_id: str, config: PlatformConfig):
    """The TorchTrainer of one run: one worker, a GPU where the cluster has one."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    # read by fit() here and passed on to Ray Train's controller and worker
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", HEALTH_CHECK_INTERVAL_S)
    use_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run_id": run_id, "platform": config.to_args()},
        scaling_config=ScalingConfig(num_workers=1, use_gpu=use_gpu,  # use_gpu adds one GPU
                                     resources_per_worker={"CPU": config.distill.num_cpus}),
        run_config=RunConfig(name=run_id, storage_path=storage_path(config),
                             failure_config=FailureConfig(max_failures=MAX_FAILURES)),
    )


def fit_run(run_id: str, config: PlatformConfig) -> Run:
    """Train one run through Ray Train to its end; a run the job could not end (the worker
    failed for good, or Ray did) is marked failed with the error's last line."""
    from blockrag.distill.job import JobStores

    error = None
    try:
        make_trainer(run_id, config).fit()
    except Exception as e:  # noqa: BLE001 - any failure of the job ends the run as failed
        error = _last_line(e)
    stores = JobStores.open(config.database, config.object_store)
    try:
        run = stores.runs.get(run_id)
        if run.finished:
            return run
        return fail(stores.runs, run_id, error or "the training job ended without finishing the run")
    finally:
        stores.close()


def fail(runs, run_id: str, error: str) -> Run:
    """Mark a run failed from wherever it is (a pending run passes through running)."""
    try:
        if runs.get(run_id).status == "pending":
            runs.set_status(run_id, "running")
        return runs.set_status(run_id, "failed", error=error)
    except BlockRAGError:  # it ended meanwhile
        return runs.get(run_id)


def _last_line(error: BaseException) -> str:
    """Ray's errors carry the worker's traceback: its last line names the cause."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:2000]
