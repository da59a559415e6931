"""DistillationRunner: the platform's one starter of distillation runs, a detached Ray actor.

It creates a run (RunStore: one at a time per scope) and trains it through Ray Train
(trainer.fit_run) on a thread of its own until the run ends; keeps the periodic schedule
(PlatformConfig.distill.schedule); and, when it starts, resubmits the runs that a previous
runner left unfinished, which resume from their checkpoints. Detached and named, it outlives
the Admin replica that created it: Admin replicas find it by name (`runner`), however many
there are, so the schedule runs once per cluster.
"""

from __future__ import annotations

import logging
import threading
import time

from blockrag.distill.runs import JobStores, start_run
from blockrag.errors import BlockRAGError, ConflictError
from blockrag.registry import Run
from blockrag_services.config import PlatformConfig
from blockrag_services.distillation.request import RunRequest
from blockrag_services.distillation.schedule import Schedule
from blockrag_services.distillation.trainer import fit_run

log = logging.getLogger("blockrag.distillation")
NAME, NAMESPACE = "blockrag-distillation-runner", "blockrag"


class DistillationRunner:
    """Runs in the background; every method returns at once."""

    def __init__(self, args: dict, fit=fit_run):
        """fit(run_id, config): trains one run to its end (tests pass their own)."""
        self.config = PlatformConfig.from_args(args)
        self.stores = JobStores.open(self.config.database, self.config.object_store)
        self.fit = fit
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._schedule_stop = threading.Event()
        for run in self.stores.runs.list(limit=1000):
            if not run.finished:
                log.info("resuming distillation run %s (%s, step %d)", run.run_id, run.status, run.step)
                self._submit(run.run_id)
        self._start_schedule()

    def configure(self, args: dict) -> None:
        """Take a new platform config (an Admin replica's); the schedule restarts if it changed."""
        config = PlatformConfig.from_args(args)
        if config != self.config:
            self.config = config
            self._start_schedule()

    def start(self, request: RunRequest) -> Run:
        """A new run, training in the background; ConflictError while one of its scope is going,
        InvalidRequestError or NotFoundError for a bad request."""
        run = start_run(self.stores.runs, self.stores.index, request.tenant, request.spec(self.config))
        self._submit(run.run_id)
        return run

    def active_runs(self) -> list[str]:
        with self._lock:
            return sorted(self._threads)

    def _submit(self, run_id: str) -> None:
        thread = threading.Thread(target=self._fit, args=(run_id,), name=f"distill-{run_id}", daemon=True)
        with self._lock:
            self._threads[run_id] = thread
        thread.start()

    def _fit(self, run_id: str) -> None:
        try:
            run = self.fit(run_id, self.config)
            log.info("distillation run %s ended %s%s", run_id, run.status, f": {run.error}" if run.error else "")
        except Exception:  # noqa: BLE001 - a thread's failure would vanish silently
            log.exception("distillation run %s could not be ended", run_id)
        finally:
            with self._lock:
                self._threads.pop(run_id, None)

    # -- schedule ----------------------------------------------------------------------------------

    def _start_schedule(self) -> None:
        self._schedule_stop.set()  # the previous schedule's loop ends
        schedule = Schedule.parse(self.config.distill.schedule)
        if schedule is None:
            return
        self._schedule_stop = stop = threading.Event()
        threading.Thread(target=self._schedule_loop, args=(schedule, stop), name="distill-schedule",
                         daemon=True).start()

    def _schedule_loop(self, schedule: Schedule, stop: threading.Event) -> None:
        due = schedule.next_after(time.time())
        log.info("distillation schedule %r: next run at %s", schedule.expression, time.ctime(due))
        while not stop.wait(max(0.0, min(60.0, due - time.time()))):
            if time.time() < due:
                continue
            try:
                run = self.start(RunRequest.scheduled(self.config))
                log.info("scheduled distillation run %s started", run.run_id)
            except ConflictError as e:
                log.info("scheduled distillation run skipped: %s", e)
            except BlockRAGError as e:
                log.warning("scheduled distillation run could not start: %s", e)
            due = schedule.next_after(time.time())


def runner(config: PlatformConfig):
    """The cluster's runner actor (created on first use, with this config)."""
    import ray

    return ray.remote(DistillationRunner).options(
        name=NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0, max_concurrency=16,
    ).remote(config.to_args())
