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


def tiny_backbone(window: int = 64, overlap: int = 16):
    """A tiny random BERT under the default segmenter's tokenizer, as a segmentation Backbone:
    features are real tensors, cheap."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from blockrag.segment.backbone import ENCODER, Backbone, minilm_path

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)
    return Backbone(BertModel(config), tokenizer, ENCODER, "tiny-bert", window=window, overlap=overlap)
