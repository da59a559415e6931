"""Block distillation through the platform, as an operator drives it: `blockrag-admin distill
start` trains the default model on an ingested collection through Ray Train (a few steps),
evaluates and registers a version; `model promote` and `model rollback` change the active one
while a client streams answers, which switch to the version and back without an error;
unknown runs and versions, a second run of a busy scope and a bad config are refused with one
line each. One run: the whole flow is one test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from calls import COLLECTION, ask

from blockrag.v1 import generation_pb2

BIN = Path(sys.executable).parent
# a small run of the default model: 2 steps of one short example, 4 examples, 2 held-out questions
SMALL = ["--steps", "2", "--examples", "4", "--eval-questions", "2", "--set", "examples_per_step=1",
         "--set", "max_example_tokens=384", "--set", "eval_examples=0", "--set", "checkpoint_every=1",
         "--set", "lora.rank=4"]
SEP = r"[\s│┃]+"  # between the cells of a rich table row


def admin(platform, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", BLOCKRAG_ADDRESS=platform.grpc)
    return subprocess.run([str(BIN / "blockrag-admin"), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess, status: str, message: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    line = " ".join(result.stderr.split())  # the console wraps long lines
    assert line.startswith(f"error: {status}: ") and message in line, line
    assert "Traceback" not in result.stderr


class Streamer:
    """A client asking over the collection again and again, on its own thread: the model version
    of every answer, and every error."""

    def __init__(self, generation):
        self.versions: list[str] = []
        self.errors: list[Exception] = []
        self._stop = threading.Event()
        request = generation_pb2.GenerateRequest(collection=COLLECTION, question="Who signs the permits?",
                                                 max_new_tokens=4)

        def loop():
            while not self._stop.is_set():
                try:
                    self.versions.append(ask(generation, request)[1].model_version)
                except Exception as e:  # noqa: BLE001 - every failure is the finding
                    self.errors.append(e)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def until(self, predicate, timeout: float = 240) -> None:
        """Wait for an answer, finished from now on, whose model version satisfies predicate."""
        deadline, seen = time.monotonic() + timeout, len(self.versions)
        while time.monotonic() < deadline and not self.errors:
            if any(predicate(v) for v in self.versions[seen:]):
                return
            time.sleep(0.2)
        assert not self.errors, self.errors
        raise AssertionError(f"no answer switched within {timeout} s: {self.versions[-5:]}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


def test_distill_register_promote_and_roll_back(platform, ingested, generation):
    started = admin(platform, "distill", "start", "--collection", COLLECTION, *SMALL)
    assert started.returncode == 0, started.stdout + started.stderr
    run_id = re.search(r"Started (run_[0-9a-f]+) for the shared scope: 2 steps", started.stdout).group(1)

    busy = admin(platform, "distill", "start", *SMALL)  # the shared scope is taken by the run above
    one_line_error(busy, "FAILED_PRECONDITION", f"a distillation run is already going for scope '': {run_id}")
    one_line_error(admin(platform, "distill", "start", "--tenant", "acme", "--set", "stepz=3"),
                   "INVALID_ARGUMENT", "unknown keys ['stepz']")
    one_line_error(admin(platform, "distill", "start", "--tenant", "acme", "--collection", "nothing-here"),
                   "NOT_FOUND", "collection 'nothing-here' of tenant 'acme' has no blocks")

    watched = admin(platform, "distill", "watch", run_id, timeout=900)
    assert watched.returncode == 0, watched.stdout + watched.stderr + platform.log_tail()
    version_id = re.search(rf"{run_id} succeeded: registered (mv_[0-9a-f]+) \(answer-token KL", watched.stdout).group(1)

    status = admin(platform, "distill", "status", run_id)
    assert status.returncode == 0 and "succeeded" in status.stdout and "2 / 2" in status.stdout, status.stdout
    assert version_id in status.stdout and "active_kl" in status.stdout and "base_kl" in status.stdout
    listed = admin(platform, "distill", "list")
    assert run_id in listed.stdout and version_id in listed.stdout
    models = admin(platform, "model", "list")
    assert models.returncode == 0 and re.search(rf"{version_id}{SEP}the shared scope{SEP}candidate{SEP}base", models.stdout)

    streamer = Streamer(generation)
    try:
        streamer.until(lambda v: v != "")
        base = streamer.versions[0]
        promoted = admin(platform, "model", "promote", version_id)
        assert promoted.returncode == 0, promoted.stderr
        assert f"Promoted {version_id}: active for the shared scope" in promoted.stdout
        assert re.search(rf"{version_id}{SEP}the shared scope{SEP}active", admin(platform, "model", "list").stdout)
        streamer.until(lambda v: v != base)  # the replicas follow the promotion, no restart
        rolled = admin(platform, "model", "rollback")
        assert rolled.returncode == 0 and "the base model serves it now" in rolled.stdout, rolled.stderr
        assert re.search(rf"{version_id}{SEP}the shared scope{SEP}retired", admin(platform, "models", "list").stdout)
        streamer.until(lambda v: v == base)
    finally:
        streamer.stop()
    assert not streamer.errors, streamer.errors  # no answer failed across both switches
    assert len(set(streamer.versions)) == 2, set(streamer.versions)

    one_line_error(admin(platform, "model", "rollback"), "FAILED_PRECONDITION", "no promotion to roll back")
    one_line_error(admin(platform, "model", "promote", version_id, "--tenant", "acme"), "FAILED_PRECONDITION",
                   "cannot serve scope 'acme'")
    one_line_error(admin(platform, "model", "promote", "mv_0000000000000000"), "NOT_FOUND",
                   "unknown model version 'mv_0000000000000000'")
    one_line_error(admin(platform, "distill", "status", "run_0000000000000000"), "NOT_FOUND",
                   "unknown distillation run 'run_0000000000000000'")
    one_line_error(admin(platform, "distill", "watch", "run_0000000000000000"), "NOT_FOUND",
                   "unknown distillation run")

    pending = admin(platform, "distill", "start", "--tenant", "acme", *SMALL)
    other = re.search(r"Started (run_[0-9a-f]+) for tenant 'acme'", pending.stdout).group(1)
    cancelled = admin(platform, "distill", "cancel", other)
    assert cancelled.returncode == 0 and other in cancelled.stdout, cancelled.stderr
    ended = admin(platform, "distill", "watch", other, timeout=300)
    assert ended.returncode == 1 and "cancelled" in ended.stdout, ended.stdout + ended.stderr


def test_a_bad_distillation_schedule_stops_blockrag_up_at_once(tmp_path):
    result = subprocess.run([str(BIN / "blockrag"), "up", "--state-dir", str(tmp_path), "--distill-schedule",
                             "every day"], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, COLUMNS="200"))
    assert result.returncode == 1, result.stdout + result.stderr
    line = " ".join(result.stderr.split())
    assert line.startswith("error: distillation schedule 'every day' is neither an interval"), line
    assert "Starting the platform" not in result.stdout  # refused before Ray starts
