"""The parts of a resolver, real and small: a tiny random Llama (two versions: two fingerprints)
under the default tokenizer, a SQLite cache index and a local object store per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from resolve_parts import TinyRuntime, tiny_runtime
from tiny_versions import save_tiny_llama

from blockrag.kvcache.index import CacheIndex
from blockrag.kvcache.object_store import LocalObjectStore


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def runtime(tiny_dir) -> TinyRuntime:
    return tiny_runtime(tiny_dir)


@pytest.fixture(scope="session")
def other_runtime(tiny_dir) -> TinyRuntime:
    return tiny_runtime(tiny_dir, perturb=0.01)


@pytest.fixture
def index(tmp_path) -> CacheIndex:
    index = CacheIndex.open(f"sqlite:///{tmp_path}/index.db")
    yield index
    index.close()


@pytest.fixture
def objects(tmp_path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "kv")
