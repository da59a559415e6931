"""`blockrag local-ask --kv-compression` as a user runs it (the console script, in a subprocess), on
a tiny random Llama: the setting is checked as the platform's kv_compression is (a bad name fails
before the model loads), gated as Precompute gates it at start, and the cache directory then holds
frames of that setting, which the next ask reads back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_versions import save_tiny_llama

from blockrag.kvcache import KVCodec
from blockrag.kvcache.compression import KVCompression

BLOCKRAG = str(Path(sys.executable).with_name("blockrag"))


def ask(*args: str, cache_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([BLOCKRAG, "local-ask", "Which river runs through Veldmark?", *args, "--cache-dir",
                           str(cache_dir), "--max-new-tokens", "2", "--no-compare-full"],
                          capture_output=True, text=True, env=env, timeout=900)


def frames(cache_dir: Path) -> list[KVCompression]:
    """The setting of every KV object in the cache directory (index.db* lie at its top)."""
    return [KVCodec.read_header(p.read_bytes()).compression
            for p in cache_dir.rglob("*") if p.is_file() and p.parent != cache_dir]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def test_a_bad_setting_is_named_before_the_model_loads(tmp_path):
    result = ask("--kv-compression", "int8", "--model", str(tmp_path / "no-model-here"), cache_dir=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: kv_compression must be one of none, int8_head, int8_token, fp8_head; got 'int8'" in result.stderr


def test_no_cache_has_nothing_to_compress(tmp_path):
    result = ask("--kv-compression", "int8_token", "--no-cache", cache_dir=tmp_path)
    assert result.returncode == 2 and "--no-cache keeps none" in result.stderr


def test_the_cache_holds_and_serves_the_gated_setting(tmp_path, tiny_dir):
    model = ("--model", str(tiny_dir), "--adapter", "none")
    first = ask(*model, "--kv-compression", "int8_token", cache_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "kv_compression int8_token passed its gate: mean answer-token KL" in first.stdout
    assert "over 8 questions" in first.stdout  # PlatformConfig's kv_compression_gate_questions
    assert "12 (0 from the KV cache, 12 encoded now" in first.stdout
    assert frames(tmp_path) == [KVCompression.INT8_TOKEN] * 12
    again = ask(*model, "--kv-compression", "int8_token", cache_dir=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "12 (12 from the KV cache, 0 encoded now" in again.stdout
    # uncompressed asks treat the int8 entries as misses: encoded again, stored as computed
    plain = ask(*model, cache_dir=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "passed its gate" not in plain.stdout and "12 (0 from the KV cache, 12 encoded now" in plain.stdout
    assert sorted(map(str, frames(tmp_path))) == ["none"] * 12
