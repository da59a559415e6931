"""ModelRuntime: one loaded model as the services use it: engine, prompt template, version.

Precompute and generation replicas each hold one. Both must agree on the model version (the
fingerprint of weights and dtype), since it is part of every cache key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedTokenizerBase

from blockrag.errors import ModelLoadError

if TYPE_CHECKING:
    from blockrag.distill.adapter import Adapter

from blockrag.attention import BlockAttentionEngine
from blockrag.model_spec import ModelSpec
from blockrag.prompt import PromptTemplate


@dataclass
class ModelRuntime:
    spec: ModelSpec
    engine: BlockAttentionEngine
    tokenizer: PreTrainedTokenizerBase
    template: PromptTemplate
    version: str
    load_seconds: float

    @classmethod
    def load(cls, spec: ModelSpec, threads: int | None = None) -> ModelRuntime:
        """Load the model and pass the engine's correctness gate (EngineCorrectnessError if not).
        threads: torch's CPU threads for this process (None: leave as is)."""
        if threads:
            torch.set_num_threads(threads)
        return cls.load_version(spec, spec.load_adapter())

    @classmethod
    def load_version(cls, spec: ModelSpec, adapter: Adapter | None, version_id: str = "") -> ModelRuntime:
        """The base model of `spec` (its dtype and device; its own adapter setting ignored) with
        `adapter` merged (None: the base itself), gated: a model-registry version as a replica
        serves it. version_id names it in errors (ModelLoadError when the adapter was trained
        on another base, EngineCorrectnessError when the gate fails)."""
        from transformers.utils import logging as hf_logging

        from blockrag.models import load_model

        hf_logging.disable_progress_bar()  # replicas log to files: no progress bars there
        started = time.perf_counter()
        model, tokenizer = load_model(spec.model, dtype=spec.dtype, device=spec.resolved_device())
        if adapter is not None:
            try:
                model = adapter.merge_into(model)
            except ModelLoadError as e:
                raise ModelLoadError(f"model version {version_id}: {e}" if version_id else str(e)) from e
        template = PromptTemplate(tokenizer)
        opening = adapter.opening if adapter else None
        if opening is not None and opening.tokens != tuple(template.prefix_ids()):
            raise ModelLoadError(
                f"model version {version_id or spec.adapter}: its adapter was trained with another prompt opening "
                f"({len(opening.tokens)} tokens) than this platform's template ({len(template.prefix_ids())} tokens): "
                "serve it with the system prompt it was trained with, or train one for this template")
        engine = BlockAttentionEngine.for_serving(model, sink_token_id=adapter.sink_token_id if adapter else None,
                                                  opening=opening)
        return cls(spec, engine, tokenizer, template, engine.fingerprint, time.perf_counter() - started)

    def block_ids(self, text: str) -> list[int]:
        """Token ids of one context block, exactly as the prompt will hold them."""
        return self.template.block_ids(text)

    def describe(self) -> dict:
        """Version, source and gate results, for the admin service (plain types: crosses Ray)."""
        gate = self.engine.gate_report
        return {"version": self.version, "source": self.spec.source, "adapter": self.spec.adapter,
                "sink_token_id": self.engine.sink_token_id, "opening_tokens": len(self.engine.opening.tokens) if self.engine.opening else 0,
                "dtype": self.spec.dtype,
                "device": str(self.engine.device), "key_error": gate.key_error, "logit_error": gate.logit_error}
