"""A tiny model version as blockrag.resolve takes it (engine, prompt template, fingerprint)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from blockrag.attention import BlockAttentionEngine
from blockrag.prompt import PromptTemplate


@dataclass(frozen=True)
class TinyRuntime:
    engine: BlockAttentionEngine
    template: PromptTemplate
    version: str


def tiny_runtime(model_dir: Path, perturb: float = 0.0) -> TinyRuntime:
    from blockrag.models import load_model

    model, tokenizer = load_model(str(model_dir))
    if perturb:  # another version of the model: other weights, another fingerprint
        with torch.no_grad():
            model.model.embed_tokens.weight.add_(perturb)
    engine = BlockAttentionEngine(model)
    return TinyRuntime(engine, PromptTemplate(tokenizer), engine.fingerprint)
