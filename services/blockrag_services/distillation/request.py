"""RunRequest: what a StartDistillation request (or the schedule) asks for, before the platform's
defaults (PlatformConfig.distill) fill its empty fields into a RunSpec."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blockrag.distill.config import DistillConfig
from blockrag.distill.runs import RunSpec
from blockrag_services.config import PlatformConfig


@dataclass(frozen=True)
class RunRequest:
    """Zero: the platform's default (PlatformConfig.distill). No collection and no directory:
    the default corpus. overrides: DistillConfig keys (lora nested), over the configured ones."""

    tenant: str = ""
    collection: str = ""
    directory: str = ""
    steps: int = 0
    examples: int = 0
    eval_questions: int = 0
    overrides: Mapping[str, Any] = field(default_factory=dict)
    auto_promote: bool = False

    @classmethod
    def scheduled(cls, config: PlatformConfig) -> RunRequest:
        """The run the schedule starts: the configured defaults throughout."""
        d = config.distill
        return cls(tenant=d.tenant, collection=d.collection, directory=d.directory, auto_promote=d.auto_promote)

    def spec(self, config: PlatformConfig) -> RunSpec:
        """The run's spec on this platform (its model, its defaults); InvalidRequestError for a
        bad override or value."""
        d = config.distill
        overrides = {**d.config, **self.overrides, **({"steps": self.steps} if self.steps else {})}
        if isinstance(d.config.get("lora"), Mapping) and isinstance(self.overrides.get("lora"), Mapping):
            overrides["lora"] = {**d.config["lora"], **self.overrides["lora"]}
        return RunSpec(collection=self.collection, directory=self.directory, examples=self.examples or d.examples,
                       eval_questions=self.eval_questions or d.eval_questions, logged_questions=d.logged_questions,
                       auto_promote=self.auto_promote, model=config.model,
                       config=DistillConfig.from_dict(overrides))
