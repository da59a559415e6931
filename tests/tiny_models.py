"""Tiny random-initialised causal LMs of several rotary architectures, for math tests."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

_COMMON = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
               attn_implementation="sdpa")


def tiny_configs() -> dict:
    """name -> config. Llama with Llama-3.1 rope scaling; Qwen3 has q/k norms; Mistral and Qwen2 GQA."""
    return {
        "llama31": LlamaConfig(**_COMMON, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
        "qwen2": Qwen2Config(**_COMMON),
        "qwen3": Qwen3Config(**_COMMON, head_dim=32),
        "mistral": MistralConfig(**_COMMON, sliding_window=None),
    }


def tiny_model(name: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A random-initialised model in eval mode."""
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_configs()[name], dtype=dtype).eval()
