"""RotaryReencoder: rotate keys cached at local positions 0..L-1 to a global offset.

RoPE rotates each pair of dimensions (i, i + D/2) by the angle p * inv_freq[i]. Rotations
compose, R(o) R(p) = R(o + p), so a key encoded at local position p and rotated by R(o) is the
key the model would have produced at global position o + p. The per-frequency scaling of
Llama-3.1 ("llama3"), linear and YaRN lives in inv_freq and in an attention factor that the
model already applied once at encode time; the re-rotation is a pure rotation.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from blockrag.errors import UnsupportedModelError

# RoPE variants whose frequencies change with the sequence length: a key rotated at encode time
# would not match the one the model computes for the whole prompt.
_LENGTH_DEPENDENT_ROPE = {"dynamic", "longrope"}


class RotaryReencoder:
    """Applies R(offset) to cached keys, computing the angle in float64 and the product in fp32."""

    def __init__(self, inv_freq: torch.Tensor):
        # inv_freq: [D/2] frequencies exactly as the model uses them (rope scaling included).
        self.inv_freq = inv_freq.detach().to("cpu", torch.float64)
        self.half_dim = self.inv_freq.numel()
        self._device_inv_freq: dict[torch.device, torch.Tensor] = {}

    @classmethod
    def from_model(cls, model: PreTrainedModel) -> RotaryReencoder:
        """Find the model's rotary embedding; refuse models that have none or a variant we cannot re-rotate."""
        config = model.config.get_text_config()
        rotary = next((m for m in model.modules() if isinstance(getattr(m, "inv_freq", None), torch.Tensor)), None)
        if rotary is None:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no rotary position embedding (learned or ALiBi "
                "positions?): block attention re-rotates cached keys, so it needs a RoPE model "
                "such as Llama, Qwen2/3 or Mistral"
            )
        rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
        rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
        if rope_type in _LENGTH_DEPENDENT_ROPE:
            raise UnsupportedModelError(
                f"rope type {rope_type!r} changes its frequencies with the sequence length, so "
                "keys cached at one length are wrong at another; use a model with default, "
                "linear, llama3 or yarn rope scaling"
            )
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        if 2 * rotary.inv_freq.numel() != head_dim:
            raise UnsupportedModelError(
                f"partial rotary embeddings ({2 * rotary.inv_freq.numel()} of {head_dim} dims) "
                "are not supported yet"
            )
        return cls(rotary.inv_freq)

    def cos_sin_on(self, offsets: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of offsets[i] * inv_freq for an int tensor of offsets: fp32 [n, D/2] on `device`.
        The angle is formed in float64: at 32K positions an fp32 product is off by ~4e-3 rad."""
        device = torch.device(device)
        if device not in self._device_inv_freq:
            self._device_inv_freq[device] = self.inv_freq.to(device)
        angle = offsets.to(device, torch.float64)[:, None] * self._device_inv_freq[device][None, :]
        return angle.cos().float(), angle.sin().float()

    def rotate(self, keys: torch.Tensor, offset: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """keys: [..., L, D] at local positions -> the same keys at positions offset + local.

        out (same shape, may be a strided view into a preallocated cache) receives the result;
        it is computed in fp32 and cast once to out's dtype.
        """
        if out is None:
            out = torch.empty_like(keys)
        if offset == 0:
            return out.copy_(keys)
        h = self.half_dim
        cos, sin = (t[0] for t in self.cos_sin_on(torch.tensor([offset]), keys.device))  # [D/2] each
        k = keys if keys.dtype == torch.float32 else keys.float()
        k1, k2 = k[..., :h], k[..., h:]
        # HF layout (rotate_half): x' = [x1 cos - x2 sin, x2 cos + x1 sin], one angle per pair.
        if out.dtype == torch.float32:
            torch.mul(k1, cos, out=out[..., :h]).addcmul_(k2, sin, value=-1.0)
            torch.mul(k2, cos, out=out[..., h:]).addcmul_(k1, sin)
        else:
            out[..., :h].copy_(torch.mul(k1, cos).addcmul_(k2, sin, value=-1.0))
            out[..., h:].copy_(torch.mul(k2, cos).addcmul_(k1, sin))
        return out
