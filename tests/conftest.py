"""Session-wide fixtures: the default model is loaded once per test session."""

from __future__ import annotations

import pytest

pytest_plugins = ["fixtures.s3", "fixtures.postgres", "fixtures.platform", "fixtures.prometheus", "fixtures.index_db",
                  "fixtures.pki"]


@pytest.fixture(scope="session")
def default_model():
    """(model, tokenizer) of the embedded default, float32 on the CPU."""
    from blockrag.models import load_model

    return load_model()


@pytest.fixture(scope="session")
def default_engine(default_model):
    """A gated engine over the default model."""
    from blockrag.attention import BlockAttentionEngine

    return BlockAttentionEngine.for_serving(default_model[0])


@pytest.fixture(scope="session")
def served_runtime():
    """The default model as the platform serves it: the shipped distillation adapter merged,
    block sinks on, gate passed."""
    from blockrag.model_runtime import ModelRuntime, ModelSpec

    return ModelRuntime.load(ModelSpec(device="cpu"))
