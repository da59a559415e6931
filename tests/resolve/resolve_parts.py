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


def tiny_runtime(model_dir: Path, perturb: float = 0.0, opening_gap: int | None = None) -> TinyRuntime:
    """opening_gap: blocks share the template's opening at this gap (the shipped adapter's
    layout); None: plain blocks."""
    from blockrag.attention.layout import Opening
    from blockrag.models import load_model

    model, tokenizer = load_model(str(model_dir))
    if perturb:  # another version of the model: other weights, another fingerprint
        with torch.no_grad():
            model.model.embed_tokens.weight.add_(perturb)
    template = PromptTemplate(tokenizer)
    opening = None if opening_gap is None else Opening(tuple(template.prefix_ids()), opening_gap)
    engine = BlockAttentionEngine(model, opening=opening)
    return TinyRuntime(engine, template, engine.fingerprint)
