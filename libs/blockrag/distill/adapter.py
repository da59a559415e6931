"""Adapter: a trained LoRA adapter as one self-describing blob (object store, package data).

Layout: a safetensors file of the adapter weights whose string metadata holds the LoRA
settings, the block sink token or the shared opening (token ids) and the fingerprint of the base
model it was trained on. A
served version is the base with the adapter merged, so its fingerprint (and with it every
cache key) differs from the base's.

The weights are float32, or (to_bytes(bits=8 or 4)) symmetric integer codes per group of
GROUP consecutive values with a float32 scale per group: about a quarter or an eighth of the size
(the package ships its adapter in 4 bits). Reading gives float32 weights either way.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import safetensors.torch
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import SafetensorError
from transformers import PreTrainedModel

from blockrag.attention.layout import Opening
from blockrag.distill.config import LoraSettings
from blockrag.errors import InvalidRequestError, ModelLoadError
from blockrag.models.fingerprint import model_fingerprint

FORMAT = "blockrag-adapter/1"
GROUP = 64  # values per quantization scale


@dataclass(frozen=True)
class Adapter:
    """weights: peft's adapter state dict (names without the adapter name)."""

    weights: dict[str, torch.Tensor]
    lora: LoraSettings
    sink_token_id: int | None
    base_fingerprint: str
    opening: Opening | None = None  # the engine's shared opening it was trained with

    @classmethod
    def from_student(cls, student, lora: LoraSettings, sink_token_id: int | None, base_fingerprint: str,
                     opening: Opening | None = None) -> Adapter:
        weights = {k: v.detach().to("cpu", torch.float32).contiguous()
                   for k, v in get_peft_model_state_dict(student).items()}
        return cls(weights, lora, sink_token_id, base_fingerprint, opening)

    def to_bytes(self, bits: int = 32) -> bytes:
        """The blob; bits 32 keeps the weights as they are, 8 or 4 quantizes them (lossy)."""
        if bits not in (32, 8, 4):
            raise InvalidRequestError(f"adapter weights are stored in 32, 8 or 4 bits, not {bits}")
        meta = {"format": FORMAT, "lora": json.dumps({**self.lora.__dict__, "target_modules": list(self.lora.target_modules)}),
                "sink_token_id": json.dumps(self.sink_token_id), "base_fingerprint": self.base_fingerprint,
                "opening": json.dumps(None if self.opening is None else self.opening.to_dict())}
        if bits == 32:
            return safetensors.torch.save(self.weights, metadata=meta)
        tensors = {}
        for name, w in self.weights.items():
            tensors[name], tensors[name + SCALES] = _quantize(w, bits)
        meta.update(bits=str(bits), shapes=json.dumps({k: list(v.shape) for k, v in self.weights.items()}))
        return safetensors.torch.save(tensors, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> Adapter:
        try:
            weights = safetensors.torch.load(data)
            # safetensors' own reader wants a file for the metadata: read the JSON header directly
            header_len = int.from_bytes(data[:8], "little")
            meta = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
        except (SafetensorError, ValueError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"not a readable adapter file: {e}") from e
        if meta.get("format") != FORMAT:
            raise ModelLoadError(f"not a blockrag adapter (format {meta.get('format')!r}, expected {FORMAT!r})")
        if "bits" in meta:
            bits, shapes = int(meta["bits"]), json.loads(meta["shapes"])
            weights = {k: _dequantize(weights[k], weights[k + SCALES], bits, shape) for k, shape in shapes.items()}
        lora = json.loads(meta["lora"])
        lora["target_modules"] = tuple(lora["target_modules"])
        opening = json.loads(meta.get("opening", "null"))  # absent from adapters before openings
        return cls(weights, LoraSettings(**lora), json.loads(meta["sink_token_id"]), meta["base_fingerprint"],
                   None if opening is None else Opening.from_dict(opening))

    def merge_into(self, model: PreTrainedModel, check_base: bool = True) -> PreTrainedModel:
        """The base `model` with this adapter merged into its weights (a plain model again; the
        given one is changed in place). Refuses a base other than the one trained on."""
        if check_base and model_fingerprint(model) != self.base_fingerprint:
            raise ModelLoadError(
                "this adapter was trained on another base model (fingerprint "
                f"{self.base_fingerprint[:12]}, loaded {model_fingerprint(model)[:12]}): load its base model")
        config = LoraConfig(r=self.lora.rank, lora_alpha=self.lora.alpha, lora_dropout=0.0,
                            target_modules=list(self.lora.target_modules), bias="none")
        dtype = model.dtype
        wrapped = get_peft_model(model, config)
        result = set_peft_model_state_dict(wrapped, {k: v.to(dtype) for k, v in self.weights.items()})
        if result.unexpected_keys:
            raise ModelLoadError(f"adapter weights do not fit this model: unexpected {result.unexpected_keys[:3]}")
        merged = wrapped.merge_and_unload()
        merged.__dict__.pop("_blockrag_fingerprint", None)  # the weights changed
        return merged.eval()


SCALES = ".scales"


def _quantize(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """w (any shape) -> codes uint8 [ceil(n / GROUP) * GROUP * bits / 8], scales float32 [groups].
    Symmetric: code = round(w / scale) + levels, scale = max |w| of the group / levels."""
    levels = 2 ** (bits - 1) - 1
    flat = w.detach().float().reshape(-1)
    flat = torch.nn.functional.pad(flat, (0, -flat.numel() % GROUP)).reshape(-1, GROUP)  # [groups, GROUP]
    # float32 scales: LoRA's B holds values near 1e-3, whose scales lie below float16's normal range
    scales = (flat.abs().amax(dim=1) / levels).clamp_min(1e-30)
    codes = (flat / scales[:, None]).round().clamp(-levels, levels).add(levels).to(torch.uint8).reshape(-1)
    if bits == 4:  # two codes per byte
        codes = codes[0::2] | (codes[1::2] << 4)
    return codes, scales


def _dequantize(codes: torch.Tensor, scales: torch.Tensor, bits: int, shape: list[int]) -> torch.Tensor:
    levels = 2 ** (bits - 1) - 1
    if bits == 4:
        codes = torch.stack([codes & 0xF, codes >> 4], dim=1).reshape(-1)
    values = (codes.float() - levels).reshape(-1, GROUP) * scales[:, None]
    return values.reshape(-1)[: math.prod(shape)].reshape(shape).contiguous()
