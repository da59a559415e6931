"""Handles to the other applications, looked up on first use (applications deploy in any order)."""

from __future__ import annotations

from ray import serve
from ray.serve.handle import DeploymentHandle

SEGMENTATION, PRECOMPUTE, CACHE_INDEX, GENERATION, ADMIN = (
    "segmentation", "precompute", "cache_index", "generation", "admin")
APPLICATIONS = (SEGMENTATION, PRECOMPUTE, CACHE_INDEX, GENERATION, ADMIN)


class Handles:
    """app name -> handle to its ingress deployment, cached."""

    def __init__(self) -> None:
        self._handles: dict[str, DeploymentHandle] = {}

    def __getitem__(self, app: str) -> DeploymentHandle:
        if app not in self._handles:
            self._handles[app] = serve.get_app_handle(app)
        return self._handles[app]
