"""BlockRef, ResolvedBlock, Resolution: what a request asks for and what resolving it gave."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from blockrag.attention import BlockKV
from blockrag.kvcache.index import block_id_for

Tier = Literal["memory", "store", "computed"]
TIERS: tuple[Tier, ...] = ("memory", "store", "computed")


@dataclass(frozen=True)
class BlockRef:
    """A context block as a request names it: an id (ingested), or its text (the id derived).

    With the text, a block whose KV is missing is encoded without reading its text back."""

    block_id: str
    text: str | None = None

    @classmethod
    def of(cls, tenant: str, block_id: str = "", text: str = "") -> BlockRef:
        """By text when given (stripped, as ingest stores it), else by id."""
        text = text.strip()
        return cls(block_id_for(tenant, text), text) if text else cls(block_id)


@dataclass(frozen=True)
class ResolvedBlock:
    block_id: str
    kv: BlockKV
    tier: Tier  # where its KV came from

    @property
    def tokens(self) -> int:
        return self.kv.num_tokens


@dataclass(frozen=True)
class Resolution:
    """The prompt's opening block and the context blocks in request order (a repeated ref
    repeats its block), with the accounting a usage report needs."""

    prefix: ResolvedBlock
    blocks: list[ResolvedBlock]
    corrupt: int = 0  # stored entries that failed their checksum or fingerprint: recomputed
    encode_seconds: float = 0.0  # waiting for the encoder (0 when nothing was missing)
    # the first block's lead form (the first passage read exactly) was computed for this request;
    # its tier stays where its cached form came from, so tiers() is the cache's behaviour
    lead_computed: bool = False

    @property
    def kvs(self) -> list[BlockKV]:
        """The KV the engine prefills over: the prefix first, then the blocks."""
        return [self.prefix.kv] + [b.kv for b in self.blocks]

    @property
    def context_tokens(self) -> int:
        return self.prefix.tokens + sum(b.tokens for b in self.blocks)

    @property
    def computed_tokens(self) -> int:
        """Context tokens encoded for this request (the prefix included when it was, the first
        block once when its cached form, its lead form or both were)."""
        cached_forms = sum(b.tokens for b in (self.prefix, *self.blocks) if b.tier == "computed")
        lead_only = self.lead_computed and self.blocks[0].tier != "computed"  # lead_computed: a first block exists
        return cached_forms + (self.blocks[0].tokens if lead_only else 0)

    def tiers(self) -> Counter[str]:
        """Context blocks by tier, one count per ref (the prefix is not a context block)."""
        return Counter(b.tier for b in self.blocks)

    def tier_tokens(self, tier: Tier) -> int:
        return sum(b.tokens for b in self.blocks if b.tier == tier)
