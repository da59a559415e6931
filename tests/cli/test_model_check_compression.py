"""`blockrag model check --kv-compression S`: the compression gate from the command line, on a tiny
model: a pass prints the figures, a refusal is one error line and exit status 1."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tiny_versions import save_tiny_llama


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A tiny random Llama with its final norm scaled up: peaked next-token distributions, on which
    a change of KV shows (random weights alone give near-uniform ones)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = save_tiny_llama(tmp_path_factory.mktemp("tiny"))
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.model.norm.weight.mul_(30.0)
    model.save_pretrained(path)
    return str(path)


def check(*args: str) -> subprocess.CompletedProcess:
    code = "from blockrag.cli.app import main; main()"
    out = subprocess.run([sys.executable, "-c", code, "model", "check", *args], capture_output=True, text=True,
                         timeout=600)
    # rich wraps lines at the terminal's width: compare words
    return subprocess.CompletedProcess(out.args, out.returncode, " ".join(out.stdout.split()),
                                       " ".join(out.stderr.split()))


def test_a_setting_within_the_gate_passes(tiny: str) -> None:
    out = check(tiny, "--adapter", "none", "--kv-compression", "int8_token", "--questions", "2")
    assert out.returncode == 0, out.stderr
    assert "kv_compression int8_token passed: mean answer-token KL" in out.stdout and "over 2 questions" in out.stdout


def test_a_setting_past_the_gate_is_refused(tiny: str) -> None:
    out = check(tiny, "--adapter", "none", "--kv-compression", "fp8_head", "--questions", "2", "--max-kl", "1e-12")
    assert out.returncode == 1
    assert "error:" in out.stderr and "kv_compression fp8_head: answers drift" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_unknown_setting_is_named(tiny: str) -> None:
    out = check(tiny, "--kv-compression", "int4")
    assert out.returncode == 1 and "kv_compression must be one of none, int8_head, int8_token, fp8_head" in out.stderr
