"""Block resolution: the KV of a request's context blocks from memory, the store or an encoder.

One core for every caller (the local pipeline, the platform's generation replicas); Precompute
writes through its BlockWriter. See resolver.py for the path a block takes.
"""

from blockrag.resolve.access_log import AccessLog
from blockrag.resolve.block_ref import BlockRef, Resolution, ResolvedBlock
from blockrag.resolve.encoder import BlockEncoder, LocalEncoder, Runtime
from blockrag.resolve.limits import IngestLimits, ResolveLimits
from blockrag.resolve.quotas import Quota, TenantQuotas
from blockrag.resolve.resolver import BlockResolver
from blockrag.resolve.store_tier import StoreTier
from blockrag.resolve.writer import BlockWriter, WrittenBlock

__all__ = ["AccessLog", "BlockEncoder", "BlockRef", "BlockResolver", "BlockWriter", "IngestLimits", "LocalEncoder", "Quota", "Resolution",
           "ResolveLimits", "ResolvedBlock", "Runtime", "StoreTier", "TenantQuotas", "WrittenBlock"]
