"""`locked_in_thread` (and `to_thread_to_the_end` beneath it, for a caller holding its lock its own
way): run engine work in a worker thread under an asyncio lock that is held until the work ends,
even when the awaiting task is cancelled.

`async with lock: await asyncio.to_thread(fn)` releases the lock as soon as the task is
cancelled (a client that went away), while `fn` is still running in its thread: the next holder
then drives the engine at the same time (two forwards over one CUDA-graph workspace, or a batch
step during an encode; Precompute's device lock had the same gap). Here the cancellation waits
for the thread, then propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def locked_in_thread(lock: asyncio.Lock, fn: Callable[..., T], *args, **kwargs) -> T:
    """fn(*args, **kwargs) in a worker thread while holding `lock`; its result or exception.
    Cancelled meanwhile: the lock is kept until fn returns, then CancelledError is raised."""
    async with lock:
        return await to_thread_to_the_end(fn, *args, **kwargs)


async def to_thread_to_the_end(fn: Callable[..., T], *args, **kwargs) -> T:
    """asyncio.to_thread, except that a cancelled caller returns only once fn has (the thread
    cannot be stopped), so whatever the caller holds (a lock) is held as long as fn runs."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        while not work.done():
            try:
                await asyncio.wait([work])
            except asyncio.CancelledError:
                pass  # cancelled again meanwhile: it is raised once, below
        raise
