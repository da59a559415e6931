"""Application builders: one Serve application per service, configured by its `args`.

    serve run deploy/serve/local.yaml      (each application's import_path is one of these)

`args` is a PlatformConfig as a dict (config.py); the same settings go to every application.
Each builder names its service: it deploys with that service's resources (its entry of
`services`, or the application's own `resources`: PlatformConfig.resources_of).
"""

from __future__ import annotations

from typing import Any

import ray
from ray.serve import Application

from blockrag_services.admin.deployment import Admin
from blockrag_services.cache_index.deployment import CacheIndexService
from blockrag_services.config import PlatformConfig, Resources
from blockrag_services.generation.deployment import Generation
from blockrag_services.precompute.deployment import Precompute
from blockrag_services.segmentation.deployment import Segmentation


def _options(r: Resources, runs_model: bool) -> dict[str, Any]:
    gpus = r.num_gpus
    if gpus is None:
        gpus = 1 if runs_model and ray.is_initialized() and ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return {"num_replicas": r.num_replicas, "max_ongoing_requests": r.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": r.num_cpus, "num_gpus": gpus}}


def _build(deployment, service: str, args: dict[str, Any] | None, runs_model: bool) -> Application:
    config = PlatformConfig.from_args(args)  # fail at deploy time on a bad setting
    return deployment.options(**_options(config.resources_of(service), runs_model)).bind(config.to_args())


def segmentation(args: dict[str, Any] | None = None) -> Application:
    return _build(Segmentation, "segmentation", args, runs_model=False)


def precompute(args: dict[str, Any] | None = None) -> Application:
    return _build(Precompute, "precompute", args, runs_model=True)


def cache_index(args: dict[str, Any] | None = None) -> Application:
    return _build(CacheIndexService, "cache_index", args, runs_model=False)


def generation(args: dict[str, Any] | None = None) -> Application:
    return _build(Generation, "generation", args, runs_model=True)


def admin(args: dict[str, Any] | None = None) -> Application:
    return _build(Admin, "admin", args, runs_model=False)


BUILDERS = {"segmentation": segmentation, "precompute": precompute, "cache_index": cache_index,
            "generation": generation, "admin": admin}
