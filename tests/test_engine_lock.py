"""locked_in_thread: a cancelled caller keeps the engine's lock until its thread's work is done,
so the next holder never drives the engine at the same time (the race of a client that went
away mid-step)."""

import asyncio
import threading

import pytest

from blockrag.engine_lock import locked_in_thread


def test_a_cancelled_caller_holds_the_lock_until_its_work_ends():
    async def scenario():
        lock, started, release, done = asyncio.Lock(), threading.Event(), threading.Event(), []

        def slow():
            started.set()
            release.wait(10)
            done.append("slow")

        first = asyncio.create_task(locked_in_thread(lock, slow))
        await asyncio.to_thread(started.wait, 10)
        first.cancel()
        second = asyncio.create_task(locked_in_thread(lock, lambda: done.append("next") or len(done)))
        await asyncio.sleep(0.1)
        # `async with lock: await asyncio.to_thread(slow)` would have let `next` run by now
        assert lock.locked() and done == [] and not second.done()
        first.cancel()  # cancelled again while waiting: still one CancelledError, still held
        await asyncio.sleep(0.05)
        assert done == []
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await second == 2 and done == ["slow", "next"]

    asyncio.run(scenario())


def test_results_and_errors_pass_through():
    async def scenario():
        lock = asyncio.Lock()
        assert await locked_in_thread(lock, lambda a, b=0: a + b, 2, b=3) == 5
        with pytest.raises(ZeroDivisionError):
            await locked_in_thread(lock, lambda: 1 / 0)
        assert not lock.locked()

    asyncio.run(scenario())


def test_a_cancelled_caller_returns_only_when_its_thread_does():
    from blockrag.engine_lock import to_thread_to_the_end

    async def scenario():
        started, release, done = threading.Event(), threading.Event(), []

        def slow():
            started.set()
            release.wait(10)
            done.append("slow")

        caller = asyncio.create_task(to_thread_to_the_end(slow))
        await asyncio.to_thread(started.wait, 10)
        caller.cancel()
        await asyncio.sleep(0.1)
        assert not caller.done()  # asyncio.to_thread would have returned CancelledError by now
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert done == ["slow"]

    asyncio.run(scenario())
