"""AnswerScheduler: concurrent answers on one engine, each equal to generate() alone; bounded
admission, cancellation that frees a slot, long requests generated alone, failures delivered."""

import asyncio
import uuid

import pytest
import torch
from prometheus_client import REGISTRY
from tiny_models import tiny_model

from blockrag.attention import BlockAttentionEngine
from blockrag.errors import InvalidBlockError, InvalidRequestError
from blockrag.scheduler import AnswerScheduler, SchedulerBusyError, SchedulerSettings

# (block lengths, final length, max_new_tokens)
SHAPES = [([5, 1, 40], 7, 9), ([30], 3, 4), ([], 5, 12), ([10, 10], 1, 6), ([50, 2], 20, 1), ([3], 2, 7)]


@pytest.fixture(scope="module")
def engine():
    model = tiny_model("llama31")
    model.set_attn_implementation("block_sdpa")
    return BlockAttentionEngine(model)


def _requests(engine, seed=0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    out = []
    for lengths, m, n in shapes:
        blocks = [torch.randint(97, (k,), generator=g).tolist() for k in lengths]
        final = torch.randint(97, (m,), generator=g).tolist()
        out.append(engine.request(engine.encode_blocks(blocks) if blocks else [], final, n, stop_ids=[]))
    return out


def _alone(engine, request):
    return list(engine.generate(request.kvs, request.final_ids, request.max_new_tokens, stop_ids=[]))


async def _collect(scheduler, request, log=None, name=None):
    out = []
    async for token in scheduler.stream(request):
        out.append(token)
        if log is not None:
            log.append(name)
    return out


def test_concurrent_answers_equal_alone_and_overlap(engine):
    requests = _requests(engine)
    alone = [_alone(engine, r) for r in requests]

    async def main():
        scheduler = AnswerScheduler(engine, asyncio.Lock(), SchedulerSettings(slots=3, slot_tokens=128, max_waiting=8))
        log = []
        got = await asyncio.gather(*(_collect(scheduler, r, log, i) for i, r in enumerate(requests)))
        return got, log, scheduler.stats()

    got, log, stats = asyncio.run(main())
    assert got == alone
    # tokens of different answers interleave: answer 0 is still running after answer 1 began
    first_of_1 = log.index(1)
    assert 0 in log[first_of_1:]
    assert (stats.running, stats.waiting, stats.alone) == (0, 0, 0)


def test_long_request_is_generated_alone_not_refused(engine):
    short, long = _requests(engine, seed=3, shapes=[([5], 3, 4), ([40, 30], 6, 10)])

    async def main():
        # a slot of 32 positions holds the short one (5 + 3 + 4), not the long one (70 + 6 + 10)
        scheduler = AnswerScheduler(engine, asyncio.Lock(), SchedulerSettings(slots=2, slot_tokens=32))
        return await asyncio.gather(_collect(scheduler, short), _collect(scheduler, long))

    assert asyncio.run(main()) == [_alone(engine, short), _alone(engine, long)]


def test_admission_is_bounded_before_any_work(engine):
    requests = _requests(engine, seed=4, shapes=[([4], 2, 30)] * 4)

    async def main():
        scheduler = AnswerScheduler(engine, asyncio.Lock(), SchedulerSettings(slots=2, slot_tokens=64, max_waiting=1))
        streams = [scheduler.stream(r) for r in requests]
        # the four start before the driver's first step: two take slots, one waits, one is refused
        firsts = await asyncio.gather(*(s.__anext__() for s in streams), return_exceptions=True)
        for s in streams[:3]:
            await s.aclose()
        return firsts, scheduler

    firsts, scheduler = asyncio.run(main())
    assert firsts[:3] == [_alone(engine, r)[0] for r in requests[:3]]
    error = firsts[3]
    assert isinstance(error, SchedulerBusyError)
    assert "generating 2 answers with 1 waiting" in str(error)
    assert error.retry_after_s == 2.0


def test_cancelled_answer_frees_its_slot(engine):
    long, other = _requests(engine, seed=5, shapes=[([4], 2, 40), ([6], 3, 5)])

    async def main():
        scheduler = AnswerScheduler(engine, asyncio.Lock(), SchedulerSettings(slots=1, slot_tokens=64, max_waiting=1))
        stream = scheduler.stream(long)
        first = await stream.__anext__()
        batch, steps = scheduler._batch, []
        real = batch.step
        batch.step = lambda: steps.append(1) or real()
        await stream.aclose()  # the client went away after one token
        got = await asyncio.wait_for(_collect(scheduler, other), timeout=60)
        return first, got, len(steps), scheduler.stats(), batch.pool.used

    first, got, steps, stats, used = asyncio.run(main())
    assert first == _alone(engine, long)[0]
    assert got == _alone(engine, other)
    # the other answer took the only slot at once: its 5 tokens took about 5 steps (one step or
    # two of the long answer may run before the cancel lands), not the long answer's 39 more
    assert steps <= 8
    assert (stats.running, stats.waiting, used) == (0, 0, 0)


def test_bad_request_fails_alone(engine):
    good, = _requests(engine, seed=6, shapes=[([4], 2, 6)])
    bad = engine.request(good.kvs, [10**6], 3, stop_ids=[])  # a token id outside the vocabulary

    async def main():
        scheduler = AnswerScheduler(engine, asyncio.Lock(), SchedulerSettings(slots=2, slot_tokens=64))
        return await asyncio.gather(_collect(scheduler, good), _collect(scheduler, bad), return_exceptions=True)

    got, error = asyncio.run(main())
    assert got == _alone(engine, good)
    assert isinstance(error, InvalidBlockError)


def test_failed_step_reaches_every_answer_and_the_next_batch_is_clean(engine, monkeypatch):
    a, b = _requests(engine, seed=7, shapes=[([4], 2, 6), ([5], 3, 6)])

    async def main():
        scheduler = AnswerScheduler(engine, asyncio.Lock(), SchedulerSettings(slots=2, slot_tokens=64))
        calls = {"n": 0}
        real = type(engine).batch

        def failing_batch(self, slots, slot_tokens):
            batch = real(self, slots, slot_tokens)
            step = batch.step

            def step_once_failing():
                calls["n"] += 1
                if calls["n"] == 2:
                    raise RuntimeError("device lost")
                return step()
            batch.step = step_once_failing
            return batch

        monkeypatch.setattr(type(engine), "batch", failing_batch)
        failed = await asyncio.gather(_collect(scheduler, a), _collect(scheduler, b), return_exceptions=True)
        again = await _collect(scheduler, a)
        return failed, again, scheduler._batch.pool.used

    failed, again, used = asyncio.run(main())
    assert [str(e) for e in failed] == ["device lost", "device lost"]
    assert again == _alone(engine, a)
    assert used == 0


@pytest.mark.parametrize("settings", [dict(slots=0), dict(slot_tokens=1), dict(max_waiting=-1), dict(slots=2.0)])
def test_settings_are_checked(settings):
    with pytest.raises(InvalidRequestError):
        SchedulerSettings(**settings)


def test_an_idle_engine_with_cuda_graphs_answers_alone_and_batches_the_rest(engine, monkeypatch):
    first, second = _requests(engine, seed=8, shapes=[([4], 2, 12), ([6], 3, 5)])
    expected = [_alone(engine, first), _alone(engine, second)]
    lone = []
    real = type(engine).generate

    def generate(self, *args, **kwargs):  # the lone path, run here without graphs (a CPU engine)
        lone.append(args[2])
        monkeypatch.setattr(self, "cuda_graphs", False)
        try:
            return iter(list(real(self, *args, **kwargs)))
        finally:
            monkeypatch.setattr(self, "cuda_graphs", True)

    monkeypatch.setattr(type(engine), "generate", generate)
    monkeypatch.setattr(engine, "cuda_graphs", True)

    async def main():
        scheduler = AnswerScheduler(engine, asyncio.Lock(), SchedulerSettings(slots=2, slot_tokens=64))
        return await asyncio.gather(_collect(scheduler, first), _collect(scheduler, second)), scheduler

    got, scheduler = asyncio.run(main())
    assert got == expected
    assert lone == [12]  # the first found it idle: alone, graphed; the second joined the batch
    assert scheduler._batch is not None


def test_a_batch_that_cannot_be_made_fails_its_answers_and_the_next_try_makes_it(engine, monkeypatch):
    """engine.batch (the KV pool; on a GPU the decode graphs) failing reaches every answer waiting
    for it, instead of leaving them to wait forever; a later answer tries again."""
    first, second = _requests(engine, seed=9, shapes=[([4], 2, 3), ([6], 3, 2)])
    real = type(engine).batch

    def broken(self, *args, **kwargs):
        raise RuntimeError("CUDA out of memory (the KV pool)")

    async def main():
        scheduler = AnswerScheduler(engine, asyncio.Lock(), SchedulerSettings(slots=2, slot_tokens=64))
        monkeypatch.setattr(type(engine), "batch", broken)
        failed = await asyncio.wait_for(asyncio.gather(_collect(scheduler, first), _collect(scheduler, second),
                                                       return_exceptions=True), 30)
        monkeypatch.setattr(type(engine), "batch", real)
        again = await asyncio.wait_for(_collect(scheduler, first), 30)
        return failed, again, scheduler

    failed, again, scheduler = asyncio.run(main())
    assert [str(e) for e in failed] == ["CUDA out of memory (the KV pool)"] * 2
    assert again == _alone(engine, first) and scheduler.idle()


async def _drain(stream):
    return [t async for t in stream]


def _answer_metrics(service: str) -> tuple[float | None, ...]:
    """(running, waiting, refused) as this process's registry exposes them for `service`."""
    names = ("blockrag_answers_running", "blockrag_answers_waiting", "blockrag_answers_refused_total")
    return tuple(REGISTRY.get_sample_value(n, {"service": service}) for n in names)


def test_gauges_follow_the_answers_and_refusals_are_counted(engine):
    service = f"scheduler-test-{uuid.uuid4().hex[:8]}"  # its own series: other tests' schedulers add nothing
    requests = _requests(engine, seed=9, shapes=[([4], 2, 20), ([5], 3, 20), ([6], 2, 5), ([3], 2, 5)])

    async def main():
        lock = asyncio.Lock()
        scheduler = AnswerScheduler(engine, lock, SchedulerSettings(slots=2, slot_tokens=64, max_waiting=1),
                                    service=service)
        seen = {"made": _answer_metrics(service)}
        a, b, c = (scheduler.stream(r) for r in requests[:3])
        firsts = list(await asyncio.gather(a.__anext__(), b.__anext__()))  # one step prefilled both
        async with lock:  # no step runs while we look
            seen["two running"] = _answer_metrics(service)
            third = asyncio.ensure_future(c.__anext__())
            while not scheduler.stats().waiting:
                await asyncio.sleep(0)
            seen["one waiting"] = _answer_metrics(service)
            with pytest.raises(SchedulerBusyError):
                await scheduler.stream(requests[3]).__anext__()
            seen["refused"] = _answer_metrics(service)
        firsts.append(await third)
        rest = await asyncio.gather(*(_drain(s) for s in (a, b, c)))
        seen["ended"] = _answer_metrics(service)
        return [[f, *r] for f, r in zip(firsts, rest)], seen

    got, seen = asyncio.run(main())
    assert got == [_alone(engine, r) for r in requests[:3]]
    assert seen == {"made": (0.0, 0.0, 0.0), "two running": (2.0, 0.0, 0.0), "one waiting": (2.0, 1.0, 0.0),
                    "refused": (2.0, 1.0, 1.0), "ended": (0.0, 0.0, 1.0)}


def test_a_cancelled_answer_leaves_the_running_gauge(engine):
    service = f"scheduler-test-{uuid.uuid4().hex[:8]}"
    long, = _requests(engine, seed=10, shapes=[([4], 2, 40)])

    async def main():
        scheduler = AnswerScheduler(engine, asyncio.Lock(), SchedulerSettings(slots=2, slot_tokens=64),
                                    service=service)
        stream = scheduler.stream(long)
        await stream.__anext__()
        running = _answer_metrics(service)[0]
        await stream.aclose()  # the client went away: its slot is free at the next step
        while not scheduler.idle():
            await asyncio.sleep(0.01)
        return running, _answer_metrics(service)

    running, after = asyncio.run(main())
    assert running == 1.0 and after == (0.0, 0.0, 0.0)


def test_a_lone_answer_counts_as_running(engine):
    service = f"scheduler-test-{uuid.uuid4().hex[:8]}"
    long, = _requests(engine, seed=11, shapes=[([40, 30], 6, 10)])

    async def main():
        # too long for a slot of 32 positions: generated alone, still one answer running
        scheduler = AnswerScheduler(engine, asyncio.Lock(), SchedulerSettings(slots=2, slot_tokens=32),
                                    service=service)
        stream = scheduler.stream(long)
        tokens = [await stream.__anext__()]
        running = _answer_metrics(service)[:2]
        tokens += await _drain(stream)
        return tokens, running, _answer_metrics(service)

    tokens, running, after = asyncio.run(main())
    assert tokens == _alone(engine, long)
    assert running == (1.0, 0.0) and after == (0.0, 0.0, 0.0)
