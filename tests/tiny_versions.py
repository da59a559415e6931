"""Model versions of a tiny random Llama, as the registry and the object store hold them: a model
directory (the default tokenizer, so prompts template as in production), random LoRA adapters
whose merge changes the weights, and their registration."""

from __future__ import annotations

from pathlib import Path

import torch

from blockrag.attention import BlockAttentionEngine
from blockrag.distill.adapter import Adapter
from blockrag.distill.config import LoraSettings
from blockrag.kvcache.object_store import ObjectStore
from blockrag.registry import ModelRegistry, ModelVersion

LORA = LoraSettings(rank=2, alpha=4.0, target_modules=("q_proj", "v_proj"))


def save_tiny_llama(path: Path) -> Path:
    """A 2-layer random Llama over the default model's tokenizer, saved as a model directory."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from blockrag.models.loader import load_tokenizer

    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_sharp_tiny_llama(path: Path) -> Path:
    """save_tiny_llama with its final norm scaled up 30x: peaked next-token distributions, on which
    a change of KV (compression, an adapter) shows in the answer-token KL."""
    from transformers import AutoModelForCausalLM

    save_tiny_llama(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.model.norm.weight.mul_(30.0)
    model.save_pretrained(path)
    return path


def random_adapter(model_dir: Path | None, seed: int, sink_token_id: int | None = None,
                   scale: float = 0.05, opening=None) -> tuple[Adapter, str]:
    """An adapter of the model in `model_dir` (None: the embedded default) with random LoRA
    weights (a trained one's B matrices are not zero; `scale` their size) and the fingerprint
    its version serves under, computed here from the merged weights."""
    from peft import LoraConfig, get_peft_model

    from blockrag.models import load_model
    from blockrag.models.fingerprint import model_fingerprint

    source = None if model_dir is None else str(model_dir)
    model = load_model(source)[0]
    base_fingerprint = model_fingerprint(model)
    student = get_peft_model(model, LoraConfig(r=LORA.rank, lora_alpha=LORA.alpha,
                                               target_modules=list(LORA.target_modules)))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in student.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    adapter = Adapter.from_student(student, LORA, sink_token_id, base_fingerprint, opening)
    merged = adapter.merge_into(load_model(source)[0])
    return adapter, BlockAttentionEngine(merged, sink_token_id=sink_token_id, opening=opening).fingerprint


def register(registry: ModelRegistry, store: ObjectStore, tenant: str, adapter: Adapter, fingerprint: str,
             name: str) -> ModelVersion:
    """Store the adapter under `name` and register a candidate version of scope `tenant`."""
    store.put(name, adapter.to_bytes())
    return registry.register(tenant, "tiny-llama", adapter.base_fingerprint, adapter_key=name,
                             fingerprint=fingerprint)
