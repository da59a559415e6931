"""What the Admin's distillation runs on, without Ray: the runner (start, resume, schedule) with a
fake fit, the schedule's expressions, the distill settings in PlatformConfig, and the trainer's
helpers. The Ray Train job itself runs in tests/e2e/test_platform_distill.py."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest

from blockrag.distill.job import JobStores
from blockrag.errors import ConflictError, InvalidRequestError
from blockrag_services.config import Distill, PlatformConfig
from blockrag_services.distillation.request import RunRequest
from blockrag_services.distillation.runner import DistillationRunner
from blockrag_services.distillation.schedule import Schedule
from blockrag_services.distillation.trainer import _last_line, fail, storage_path


class FakeFit:
    """Ends each run succeeded-less: running, then cancelled; records the ids."""

    def __init__(self):
        self.ids: list[str] = []
        self.called = threading.Event()

    def __call__(self, run_id, config):
        stores = JobStores.open(config.database, config.object_store)
        try:
            self.ids.append(run_id)
            run = stores.runs.set_status(run_id, "running")
            run = stores.runs.set_status(run_id, "cancelled", error="fake")
            self.called.set()
            return run
        finally:
            stores.close()


def platform(tmp_path, **distill) -> PlatformConfig:
    return PlatformConfig(database_url=f"sqlite:///{tmp_path}/index.db", object_store_url=str(tmp_path / "kv"),
                          distill=Distill(**distill))


def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_runner_starts_runs_one_per_scope_and_resumes_unfinished_ones(tmp_path):
    config = platform(tmp_path)
    stores = JobStores.open(config.database, config.object_store)
    left = stores.runs.create("acme", {}, 3)  # a run a previous runner never finished
    fit = FakeFit()
    runner = DistillationRunner(config.to_args(), fit=fit)
    # resumed, and ended (the fake fit records the id before it moves the run on: waiting for the
    # id alone raced with the status and made the next start a conflict on a busy machine)
    wait_for(lambda: stores.runs.get(left.run_id).status == "cancelled")
    assert left.run_id in fit.ids
    run = runner.start(RunRequest(tenant="acme", steps=2))
    assert run.tenant == "acme" and run.total_steps == 2
    wait_for(lambda: run.run_id in fit.ids and not runner.active_runs())
    assert stores.runs.get(run.run_id).status == "cancelled"
    stores.runs.create("globex", {}, 1)
    with pytest.raises(ConflictError, match="already going"):
        runner.start(RunRequest(tenant="globex"))
    stores.close()


def test_runner_schedule_starts_runs_with_the_defaults(tmp_path):
    config = platform(tmp_path, schedule="1s", tenant="acme", auto_promote=True, examples=3)
    fit = FakeFit()
    runner = DistillationRunner(config.to_args(), fit=fit)
    assert fit.called.wait(20), "the schedule started nothing"
    stores = JobStores.open(config.database, config.object_store)
    run = stores.runs.get(fit.ids[0])
    assert run.tenant == "acme" and run.config["auto_promote"] is True and run.config["examples"] == 3
    runner.configure(platform(tmp_path).to_args())  # schedule off
    time.sleep(1.5)
    count = len(fit.ids)
    time.sleep(1.5)
    assert len(fit.ids) == count
    stores.close()


def test_fail_moves_a_run_from_anywhere_to_failed(tmp_path):
    config = platform(tmp_path)
    stores = JobStores.open(config.database, config.object_store)
    run = stores.runs.create("", {}, 1)
    assert fail(stores.runs, run.run_id, "boom").status == "failed"
    assert fail(stores.runs, run.run_id, "again").error == "boom"  # it ended: left as it is
    stores.close()


def test_trainer_helpers(tmp_path, monkeypatch):
    assert storage_path(platform(tmp_path)) == str(tmp_path.resolve() / "train")
    monkeypatch.setenv("BLOCKRAG_HOME", str(tmp_path / "home"))
    s3 = PlatformConfig(object_store_url="s3://bucket/kv?endpoint=h:9000")
    assert storage_path(s3) == str(tmp_path / "home" / "platform" / "train")
    assert storage_path(PlatformConfig(distill=Distill(storage_path="/data/train"))) == "/data/train"
    assert _last_line(RuntimeError("Traceback...\n  File x\nValueError: boom\n")) == "ValueError: boom"


@pytest.mark.parametrize(("expression", "seconds"), [("30m", 1800), ("6h", 21600), ("1d", 86400), ("1h30m", 5400),
                                                      ("45s", 45)])
def test_interval_schedules(expression, seconds):
    assert Schedule.parse(expression).next_after(1000.0) == 1000.0 + seconds


@pytest.mark.parametrize(("expression", "after", "expected"), [
    ("0 3 * * *", datetime(2027, 1, 5, 2, 59, 30), datetime(2027, 1, 5, 3, 0)),
    ("0 3 * * *", datetime(2027, 1, 5, 3, 0), datetime(2027, 1, 6, 3, 0)),
    ("*/15 * * * *", datetime(2027, 1, 5, 10, 7), datetime(2027, 1, 5, 10, 15)),
    ("30 2 * * sun", datetime(2027, 1, 5, 0, 0), datetime(2027, 1, 10, 2, 30)),  # 2027-01-10 is a Sunday
    ("0 0 1 jan-mar *", datetime(2027, 3, 2), datetime(2028, 1, 1)),
    ("0 12 13 * 5", datetime(2027, 1, 1), datetime(2027, 1, 1, 12, 0)),  # day 13 OR a Friday: Jan 1 is a Friday
    ("0 0 29 2 *", datetime(2027, 1, 1), datetime(2028, 2, 29)),
    ("5,10 8-9/1 * * 1-5", datetime(2027, 1, 9, 12), datetime(2027, 1, 11, 8, 5)),  # Saturday -> Monday
])
def test_cron_schedules(expression, after, expected):
    assert Schedule.parse(expression).next_after(after.timestamp()) == expected.timestamp()


@pytest.mark.parametrize(("expression", "message"), [
    ("often", "neither an interval"),
    ("0m", "must be > 0"),
    ("60 * * * *", "minute '60' is not in 0-59"),
    ("* * * * 8", "day of week '8'"),
    ("*/0 * * * *", "bad step"),
    ("5-1 * * * *", "empty range"),
    ("0 0 31 2 *", "never matches"),
])
def test_bad_schedules_are_refused(expression, message):
    with pytest.raises(InvalidRequestError, match=message):
        Schedule.parse(expression)


def test_distill_settings_in_the_platform_config():
    assert Schedule.parse("") is None and PlatformConfig().distill == Distill()
    config = PlatformConfig.from_args({"distill": {"schedule": "0 3 * * *", "collection": "handbook",
                                                   "config": {"steps": 50, "lora": {"rank": 8}}}})
    assert config.distill.schedule == "0 3 * * *" and config.distill.config["lora"] == {"rank": 8}
    assert PlatformConfig.from_args(config.to_args()) == config
    with pytest.raises(InvalidRequestError, match="neither an interval"):
        PlatformConfig.from_args({"distill": {"schedule": "every day"}})
    with pytest.raises(InvalidRequestError, match="unknown keys"):
        PlatformConfig.from_args({"distill": {"config": {"stepz": 1}}})
    with pytest.raises(InvalidRequestError, match=r"unknown setting\(s\) schedul in distill"):
        PlatformConfig.from_args({"distill": {"schedul": "6h"}})
