"""load_model: the default model, local directories, refusals with clear errors."""

import pytest
import torch
from tiny_models import tiny_model
from transformers import AutoModelForCausalLM, GPT2Config

from blockrag.errors import ModelLoadError, UnsupportedModelError
from blockrag.models import load_model, model_fingerprint
from blockrag.models.default import default_model_dir


def test_default_model_is_the_converted_smollm2(default_model):
    model, tokenizer = default_model
    assert (default_model_dir() / "model.safetensors").is_file()
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert model.dtype == torch.float32 and not model.training
    assert tokenizer.convert_ids_to_tokens(tokenizer.eos_token_id) == "<|im_end|>"


def test_local_directory_and_dtype(tmp_path):
    tiny_model("qwen3").save_pretrained(tmp_path)
    _save_tokenizer(tmp_path)
    model, _ = load_model(tmp_path, dtype="bfloat16")
    assert model.config.model_type == "qwen3" and model.dtype == torch.bfloat16
    assert model.config._attn_implementation == "block_sdpa"


def test_model_without_rotary_positions_is_refused(tmp_path):
    AutoModelForCausalLM.from_config(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=97,
                                                bos_token_id=0, eos_token_id=0)).save_pretrained(tmp_path)
    _save_tokenizer(tmp_path)
    with pytest.raises(UnsupportedModelError, match="no rotary position embedding"):
        load_model(tmp_path)


def test_missing_model_and_bad_dtype_are_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="could not load model"):
        load_model(tmp_path / "nowhere")
    with pytest.raises(ModelLoadError, match="unknown dtype 'float8'"):
        load_model(tmp_path, dtype="float8")


def test_fingerprint_is_stable_and_follows_the_weights():
    a, b = tiny_model("llama31", seed=0), tiny_model("llama31", seed=0)
    assert model_fingerprint(a) == model_fingerprint(b)
    c = tiny_model("llama31", seed=0)
    with torch.no_grad():
        c.model.layers[1].self_attn.q_proj.weight[3, 5] += 0.5
    assert model_fingerprint(c) != model_fingerprint(a)
    assert model_fingerprint(tiny_model("llama31", dtype=torch.bfloat16)) != model_fingerprint(a)


def _save_tokenizer(path):
    from blockrag.models.default import default_model_dir
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(default_model_dir()).save_pretrained(path)
