"""The correctness gate refuses models whose cached path disagrees with the model itself."""

import pytest
import torch
from tiny_models import tiny_configs, tiny_model
from transformers import AutoModelForCausalLM, CohereConfig, GPT2Config

from blockrag.attention import BlockAttentionEngine
from blockrag.errors import EngineCorrectnessError, UnsupportedModelError


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("arch", list(tiny_configs()))
def test_gate_passes_supported_architectures(arch, dtype):
    report = BlockAttentionEngine.for_serving(tiny_model(arch, dtype=dtype)).gate_report
    assert report.key_error <= report.key_bound and report.logit_error <= report.logit_bound


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gate_refuses_interleaved_rotary(dtype):
    # Cohere rotates interleaved pairs (x0, x1), (x2, x3)...; the engine's half-split rotation
    # is wrong for it. A real model, not a mock: this is the silent-garbling case.
    config = CohereConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                          bos_token_id=1, eos_token_id=2, pad_token_id=0, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    with pytest.raises(EngineCorrectnessError, match="cohere.*key re-rotation error"):
        BlockAttentionEngine.for_serving(model)


def test_learned_positions_are_refused():
    model = AutoModelForCausalLM.from_config(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=97,
                                                        bos_token_id=0, eos_token_id=0))
    with pytest.raises(UnsupportedModelError, match="no rotary position embedding"):
        BlockAttentionEngine(model)


def test_length_dependent_rope_is_refused():
    config = tiny_configs()["llama31"]
    config.rope_parameters = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(UnsupportedModelError, match="'dynamic'"):
        BlockAttentionEngine(model)
