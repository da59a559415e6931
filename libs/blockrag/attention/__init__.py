"""Block attention: block masks, rotary re-encoding, the engine and its reference."""

from blockrag.attention.batch import GenerationBatch, StepOutput
from blockrag.attention.block_kv import BlockKV
from blockrag.attention.engine import BlockAttentionEngine, PrefillOutput
from blockrag.attention.gate import GateReport
from blockrag.attention.rotary import RotaryReencoder
from blockrag.attention.sequence import GenerationRequest

__all__ = ["BlockAttentionEngine", "BlockKV", "GateReport", "GenerationBatch", "GenerationRequest", "PrefillOutput",
           "RotaryReencoder", "StepOutput"]
