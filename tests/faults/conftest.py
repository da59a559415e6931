"""Fault tests: real parts (a tiny random Llama under the default tokenizer, SQLite or a
PostgreSQL cluster of the test's own, a local store or an rclone S3 server) broken for real."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.pg_cluster import pg_cluster  # noqa: F401  (a fixture)
from fixtures.s3_outage import restartable_s3  # noqa: F401  (a fixture)
from tiny_versions import save_tiny_llama

from blockrag.attention import BlockAttentionEngine
from blockrag.prompt import PromptTemplate


class Runtime:
    """A model version as blockrag.resolve takes it (engine, template, fingerprint)."""

    def __init__(self, model_dir: Path):
        from blockrag.models import load_model

        model, tokenizer = load_model(str(model_dir))
        self.engine = BlockAttentionEngine(model)
        self.template = PromptTemplate(tokenizer)
        self.version = self.engine.fingerprint


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Runtime:
    return Runtime(save_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))
