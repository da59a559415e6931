"""Warming before a model switch: a tenant's most-hit blocks re-encoded for the new version.

When a generation replica moves a tenant to another model version (a promotion or a rollback),
every cache key changes with the version: without warming, the first questions after the switch
would compute all their blocks. So, before the switch, the replica asks the cache index for the
tenant's ``limit`` most-hit blocks under the old version and has Precompute encode them under the
new one (in batches, with progress in the log and in blockrag_model_warm_blocks). It first waits
until Precompute serves the new version at all, so that a miss after the switch finds it loaded.
"""

from __future__ import annotations

import asyncio
import logging
import time

import sqlalchemy as sa

from blockrag.errors import ServiceUnavailableError
from blockrag.kvcache.index import CacheIndex
from blockrag.telemetry import set_model_warm
from blockrag.v1 import precompute_pb2 as precompute_pb
from blockrag_services.errors import unwrap
from blockrag_services.handles import PRECOMPUTE, Handles

log = logging.getLogger("blockrag.services.generation")

BATCH_BLOCKS = 16  # blocks per Precompute call: progress every batch, no huge request
RETRY_S = 0.5  # between tries while Precompute still loads the version


async def warm_blocks(engine: sa.Engine, handles: Handles, tenant: str, old: str, new: str, limit: int,
                      timeout_s: float) -> int:
    """Re-encode the tenant's hot blocks of version ``old`` for version ``new``; how many.
    ServiceUnavailableError when Precompute does not serve ``new`` within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    precompute = handles[PRECOMPUTE]
    while not await precompute.prepare.remote(new, tenant):
        if time.monotonic() > deadline:
            raise ServiceUnavailableError(f"precompute did not load model version {new[:16]}... within {timeout_s:.0f} s")
        await asyncio.sleep(RETRY_S)
    hot = await asyncio.to_thread(CacheIndex(engine).hottest_blocks, tenant, old, limit)
    log.info("warming tenant %r for model version %s: %d hot blocks to re-encode", tenant, new[:16], len(hot))
    set_model_warm(tenant, 0, len(hot))
    try:
        for start in range(0, len(hot), BATCH_BLOCKS):
            texts = [block.text for block in hot[start:start + BATCH_BLOCKS]]
            await _precompute(precompute, texts, new, tenant, deadline)
            done = min(start + BATCH_BLOCKS, len(hot))
            set_model_warm(tenant, done, len(hot))
            log.info("warming tenant %r for model version %s: %d/%d blocks", tenant, new[:16], done, len(hot))
    finally:
        set_model_warm(tenant, 0, 0)
    return len(hot)


async def _precompute(precompute, texts: list[str], version: str, tenant: str, deadline: float) -> None:
    request = precompute_pb.PrecomputeRequest(texts=texts, model_version=version, tenant=tenant)
    while True:
        try:
            await precompute.Precompute.remote(request)
            return
        except Exception as e:  # noqa: BLE001 - through a handle the typed error arrives wrapped
            # another precompute replica may still be loading the version: retry until the deadline
            if not isinstance(unwrap(e), ServiceUnavailableError) or time.monotonic() > deadline:
                raise unwrap(e) from e
        await asyncio.sleep(RETRY_S)
