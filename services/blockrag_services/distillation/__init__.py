"""Block distillation on the platform: the Ray Train job that runs a DistillationJob
(trainer.py), the runner that starts runs in the background and keeps the schedule (runner.py),
what a run request holds (request.py) and when scheduled runs start (schedule.py)."""
