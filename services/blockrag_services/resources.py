"""Resources: the Ray resources of one service's deployment; ServiceResources: each service's.

Every Serve application's args carry the same ServiceResources (PlatformConfig.services: a
`services:` section in deploy/serve/local.yaml and production.yaml, the embedded platform's config
in `blockrag up`), and each application's builder (app.py) deploys with its own entry; an
application's own ``resources`` (PlatformConfig.resources, the older form) replace that entry.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import Field

from blockrag_services.setting import Int, Number, check


@dataclass(frozen=True)
class Resources:
    """Ray resources of one application's deployment. num_gpus None: 1 where the cluster has
    GPUs and the service runs the model, else 0."""

    num_replicas: Annotated[Int, Field(ge=1)] = 1
    num_cpus: Annotated[Number, Field(ge=0)] = 0.1
    num_gpus: Annotated[Number, Field(ge=0)] | None = None
    max_ongoing_requests: Annotated[Int, Field(ge=1)] = 8
    torch_threads: Annotated[Int, Field(ge=1)] | None = None  # None: num_cpus, or every core for a fractional share

    def __post_init__(self) -> None:
        check(self)

    def threads(self) -> int:
        """Torch's CPU threads. Ray sets OMP_NUM_THREADS=1 in a worker with a fractional CPU
        share, which would leave the model one core even on an idle machine."""
        if self.torch_threads:
            return self.torch_threads
        return int(self.num_cpus) if self.num_cpus >= 1 else os.cpu_count() or 1


@dataclass(frozen=True)
class ServiceResources:
    """Each service's Resources, by application name (blockrag_services.app.BUILDERS)."""

    segmentation: Resources = field(default_factory=Resources)
    precompute: Resources = field(default_factory=Resources)
    cache_index: Resources = field(default_factory=Resources)
    generation: Resources = field(default_factory=Resources)
    admin: Resources = field(default_factory=Resources)

    def of(self, service: str) -> Resources:
        """The resources of ``service`` (an application name)."""
        if service not in self.names():
            raise KeyError(f"no service {service!r}; known: {', '.join(self.names())}")
        return getattr(self, service)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))
