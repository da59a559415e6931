"""`blockrag local-ask` as a user runs it: the installed console script, in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BLOCKRAG = str(Path(sys.executable).with_name("blockrag"))


def _run(*args, cache_dir):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([BLOCKRAG, "local-ask", *args, "--cache-dir", str(cache_dir), "--max-new-tokens", "8"],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def two_asks(tmp_path_factory):
    cache = tmp_path_factory.mktemp("kv")
    first = _run("Which river runs through Veldmark?", cache_dir=cache)
    second = _run("When was the Orsa Railway opened?", "--no-compare-full", cache_dir=cache)
    return first, second


def test_first_ask_encodes_every_block(two_asks):
    first, _ = two_asks
    assert first.returncode == 0, first.stderr
    assert "A:" in first.stdout
    assert "12 (0 from the KV cache, 12 encoded now" in first.stdout
    assert "from cached blocks" in first.stdout and "time to first token" in first.stdout
    assert "full-attention prefill" in first.stdout


def test_second_ask_reads_every_block_from_the_cache(two_asks):
    _, second = two_asks
    assert second.returncode == 0, second.stderr
    assert "12 (12 from the KV cache, 0 encoded now" in second.stdout
    assert "full-attention prefill" not in second.stdout


def test_missing_document_path_is_a_clear_error(tmp_path):
    result = _run("question?", "--docs", str(tmp_path / "absent.md"), cache_dir=tmp_path)
    assert result.returncode == 1
    assert "error: no such file or directory" in result.stderr and "Traceback" not in result.stderr
