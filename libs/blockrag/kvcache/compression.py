"""KVCompression: how block KV is held in the object store and the host tier, one setting per deployment.

    none        as the engine computed it (float32 on a CPU replica, bfloat16 on a GPU one); frames
                are byte for byte those of a build without compression
    int8_head   int8, one float32 scale per (layer, kv head)
    int8_token  int8, one float32 scale per (layer, kv head, token)
    fp8_head    float8 e4m3, one float32 scale per (layer, kv head)

Symmetric absmax scaling (blockrag.kvcache.quantize). A compressed frame says which setting wrote
it (KVHeader.compression), so any reader decodes it correctly; a store tier serves only frames of
its own deployment's setting and treats the others as misses (recomputed and replaced under its
setting), so a deployment serves the precision it was gated with (blockrag.kvcache.compression_gate).

This module needs no torch: the platform config imports it in replicas that never touch a tensor.
"""

from __future__ import annotations

from enum import Enum

from blockrag.errors import InvalidRequestError


class KVCompression(str, Enum):
    NONE = "none"
    INT8_HEAD = "int8_head"
    INT8_TOKEN = "int8_token"
    FP8_HEAD = "fp8_head"

    @classmethod
    def parse(cls, value: object) -> KVCompression:
        """The setting named ``value`` (a KVCompression or its name); InvalidRequestError naming
        the valid ones otherwise (a config typo fails at load, not at the first write)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            for setting in cls:
                if setting.value == value:
                    return setting
        raise InvalidRequestError(
            f"kv_compression must be one of {', '.join(s.value for s in cls)}; got {value!r}")

    @property
    def storage(self) -> str | None:
        """The element type of compressed keys and values ("int8", "float8_e4m3fn"), None for none."""
        return {KVCompression.INT8_HEAD: "int8", KVCompression.INT8_TOKEN: "int8",
                KVCompression.FP8_HEAD: "float8_e4m3fn"}.get(self)

    @property
    def per_token(self) -> bool:
        """Whether scales are per token (else per layer and head)."""
        return self is KVCompression.INT8_TOKEN

    def __str__(self) -> str:
        return self.value
