"""A model fingerprint: part of every cache key, so that KV from other weights never matches."""

from __future__ import annotations

import hashlib
import json

import torch
from transformers import PreTrainedModel

# Sampled elements per parameter. Hashing every byte of an 8B model means copying 16 GB to the
# host; a strided sample plus a float64 sum of the whole tensor (computed where the tensor
# lives) changes with any realistic weight update (fine-tune, merged LoRA, another checkpoint).
_SAMPLE = 4096
_INT_OF_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_IGNORED_CONFIG_KEYS = {"_name_or_path", "transformers_version", "_commit_hash", "dtype", "torch_dtype"}


@torch.no_grad()
def model_fingerprint(model: PreTrainedModel) -> str:
    """Hex SHA-256 over the config, the dtype, and per parameter a checksum of all its bits and a
    sample of its values.

    The checksum sums the raw bits as integers (wrapping in int64): integer addition does not
    depend on order, so a model has one fingerprint on every device. A floating-point sum does
    not: a CUDA reduction adds in another order than the CPU, and an adapter trained on a GPU
    would then refuse its own base on a CPU."""
    cached = getattr(model, "_blockrag_fingerprint", None)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    config = {k: v for k, v in model.config.to_dict().items() if k not in _IGNORED_CONFIG_KEYS}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(str(model.dtype).encode())
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        flat = param.detach().reshape(-1)
        step = max(1, flat.numel() // _SAMPLE)
        sample = flat[::step][:_SAMPLE].float().cpu()
        bits = flat.contiguous().view(_INT_OF_SIZE[flat.element_size()]).sum(dtype=torch.int64)
        digest.update(f"{name}:{tuple(param.shape)}:{bits.item()}".encode())
        digest.update(sample.numpy().tobytes())
    fingerprint = digest.hexdigest()
    model._blockrag_fingerprint = fingerprint
    return fingerprint


def with_sink(fingerprint: str, sink_token_id: int | None) -> str:
    """The fingerprint of a model served with block sink tokens: blocks encoded after a sink have
    other KV than the same blocks without one, so they must never share a cache key."""
    if sink_token_id is None:
        return fingerprint
    return hashlib.sha256(f"{fingerprint}\0block-sink:{sink_token_id}".encode()).hexdigest()


def with_opening(fingerprint: str, opening) -> str:
    """The fingerprint of a model whose blocks are encoded after a shared opening (layout.Opening):
    their KV depends on the opening's tokens and gap, so each opening has its own cache keys."""
    if opening is None:
        return fingerprint
    digest = hashlib.sha256(",".join(map(str, opening.tokens)).encode()).hexdigest()
    return hashlib.sha256(f"{fingerprint}\0opening:{digest}:gap:{opening.gap}".encode()).hexdigest()
