"""load_model: a Hugging Face causal LM (hub id, local directory, GGUF file, or the default)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from blockrag.attention.rotary import RotaryReencoder
from blockrag.attention.sdpa import NAME as BLOCK_SDPA
from blockrag.errors import ModelLoadError
from blockrag.models.default import DEFAULT_MODEL_NAME, default_model_dir

DEFAULT_MODEL = DEFAULT_MODEL_NAME
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A torch dtype from a dtype or its name ('float32', 'bfloat16', 'float16')."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _source(name_or_path: str | Path | None) -> tuple[str | Path, dict]:
    """Where from_pretrained reads the model (and its extra kwargs)."""
    if name_or_path is None or str(name_or_path) == DEFAULT_MODEL_NAME:
        return default_model_dir(), {}
    if str(name_or_path).endswith(".gguf"):
        path = Path(name_or_path)
        return path.parent, {"gguf_file": path.name}
    return name_or_path, {}


def load_tokenizer(name_or_path: str | Path | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer alone (services that count tokens but run no model)."""
    source, kwargs = _source(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load the tokenizer of {str(name_or_path)!r}: {e}") from e


def load_model(
    name_or_path: str | Path | None = None,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM with rotary positions and its tokenizer, in eval mode.

    name_or_path: None or "smollm2-135m-instruct" for the bundled default; a local directory;
    a .gguf file; or a hub id (read from the local Hugging Face cache when offline).
    Models without rotary positions are refused with UnsupportedModelError.
    """
    torch_dtype = resolve_dtype(dtype)
    source, kwargs = _source(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        # SDPA takes the explicit block masks the engine builds; flash kernels would not.
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, attn_implementation=BLOCK_SDPA, **kwargs
        )
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"could not load model {str(name_or_path)!r}: {e}. Pass a local directory with "
            "config.json and weights, a .gguf file, or a hub id present in the local cache."
        ) from e
    RotaryReencoder.from_model(model)  # raises UnsupportedModelError before anything is served
    model.to(device)
    model.eval()
    return model, tokenizer
