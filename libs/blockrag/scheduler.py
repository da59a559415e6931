"""AnswerScheduler: the answers of one engine, many at once, for an asyncio server.

A Generation replica used to hold one lock for a whole answer, so concurrent requests queued
behind each other. Here every answer that fits a KV slot joins one GenerationBatch
(attention/batch.py: continuous batching): one asyncio task drives it, one step at a time, each
step in a worker thread under the engine's lock, so other users of the engine (block encoding,
warm-up) run between steps, never during one. Requests join and leave between steps; the batch
itself is only ever touched by the task that drives it, on the event loop's thread or inside the
step it awaits.

- A request whose context, question and answer need more positions than a slot holds is
  generated alone (engine.generate), each token under the same lock: it is served, not refused.
- On an engine with CUDA graphs, an answer that finds the scheduler idle is generated alone too:
  its prefill replays the graphs (the batch's does not), so a lone request keeps the time to
  first token of bench/gpu/RESULTS.md; answers that arrive while it runs are batched.
- Admission is bounded: at most `slots` answers run and `max_waiting` wait (lone ones count as
  running); beyond that, SchedulerBusyError (RESOURCE_EXHAUSTED) with a retry hint, before any
  work.
- A consumer that stops iterating (a client that disconnected, an error upstream) cancels its
  answer at the next step: its slot is free for the step after.
- A step that fails ends every answer of the batch with that error and leaves the pool empty,
  so the next request starts from a clean batch.
- Given a service name, it reports to Prometheus (blockrag.telemetry.AnswerGauges) the answers
  running and waiting after every change, and counts the answers refused busy.

Each answer gets exactly the tokens that engine.generate gives it alone, greedy (the batch's
guarantee; tests/test_scheduler.py checks it through this class).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from blockrag.engine_lock import locked_in_thread
from blockrag.errors import BlockRAGError, InvalidRequestError

if TYPE_CHECKING:
    from blockrag.attention.batch import GenerationBatch
    from blockrag.attention.engine import BlockAttentionEngine
    from blockrag.attention.sequence import GenerationRequest
    from blockrag.telemetry import AnswerGauges

_DONE = object()  # the answer ended normally


class SchedulerBusyError(BlockRAGError):
    """Every slot runs an answer and the queue is full; nothing was done for the request.
    Services answer RESOURCE_EXHAUSTED; retry_after_s is a hint for when to try again."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class SchedulerSettings:
    """slots: answers decoded together (each holds a KV slot of slot_tokens positions, allocated
    when the first answer comes); max_waiting: answers queued beyond them before refusing."""

    slots: int = 4
    slot_tokens: int = 3072
    max_waiting: int = 16

    def __post_init__(self) -> None:
        for name in ("slots", "slot_tokens", "max_waiting"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidRequestError(f"scheduler {name} must be an integer, got {value!r}")
        if self.slots < 1 or self.slot_tokens < 2 or self.max_waiting < 0:
            raise InvalidRequestError(
                f"scheduler settings need slots >= 1, slot_tokens >= 2 and max_waiting >= 0; got {self.slots}, "
                f"{self.slot_tokens} and {self.max_waiting}")


@dataclass(eq=False)
class _Ticket:
    """One answer: its request, the queue its tokens reach the consumer by, and its sequence id
    in the batch once the driver added it."""

    request: GenerationRequest
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    seq_id: int | None = None


@dataclass
class SchedulerStats:
    """What the scheduler holds now: answers in the batch's slots, waiting for one, and
    generated alone (too long for a slot)."""

    running: int = 0
    waiting: int = 0
    alone: int = 0


class AnswerScheduler:
    """The answers of one engine. `lock` serialises the engine's users (a threading lock would
    do for the steps, but the replica's other users hold an asyncio one). `service`: the
    metrics' service label, None to record no metrics (tests, one-shot tools)."""

    def __init__(self, engine: BlockAttentionEngine, lock: asyncio.Lock, settings: SchedulerSettings = SchedulerSettings(),
                 service: str | None = None):
        self.engine, self.lock, self.settings = engine, lock, settings
        self._gauges: AnswerGauges | None = None
        if service is not None:
            # imported here, not above: PlatformConfig imports this module before the platform
            # sets PROMETHEUS_MULTIPROC_DIR, and prometheus_client reads it at its first import
            from blockrag.telemetry import AnswerGauges

            self._gauges = AnswerGauges(service)
        self._batch: GenerationBatch | None = None  # allocated at the first batched answer
        self._adds: list[_Ticket] = []  # to add before the next step
        self._cancels: list[_Ticket] = []  # to cancel before the next step
        self._tickets: dict[int, _Ticket] = {}  # sequence id -> ticket, in the batch
        self._alone = 0
        self._driver: asyncio.Task | None = None

    # -- the consumer's side -------------------------------------------------------------------

    async def stream(self, request: GenerationRequest) -> AsyncIterator[int]:
        """The answer's token ids as they are generated. SchedulerBusyError before any work when
        the scheduler is full; InvalidRequestError / InvalidBlockError for a request the engine
        refuses; the step's error if a step fails."""
        self.check_room()
        if self._fits(request) and not (self.engine.cuda_graphs and self.idle()):
            async for token in self._batched(request):
                yield token
        else:
            async for token in self._lone(request):
                yield token

    def stats(self) -> SchedulerStats:
        batch = self._batch
        return SchedulerStats(running=len(batch.running) if batch is not None else 0,
                              waiting=len(self._adds) + (len(batch.waiting) if batch is not None else 0),
                              alone=self._alone)

    def _report(self) -> None:
        """The gauges follow stats() after every change of it (on the event loop's thread)."""
        if self._gauges is not None:
            stats = self.stats()
            self._gauges.report(stats.running + stats.alone, stats.waiting)

    def idle(self) -> bool:
        """Nothing runs, waits or is about to be applied."""
        return not (self._tickets or self._adds or self._cancels or self._alone)

    def check_room(self) -> None:
        """SchedulerBusyError when a new answer would be refused now (a server calls it before
        any work for the request; stream() checks again)."""
        s = self.settings
        held = len(self._tickets) + len(self._adds) + self._alone
        if held >= s.slots + s.max_waiting:
            if self._gauges is not None:
                self._gauges.refused()
            # about one answer's time per queued answer ahead: a hint, not a promise
            raise SchedulerBusyError(
                f"this replica is generating {s.slots} answers with {s.max_waiting} waiting, its limit; "
                "retry in a few seconds or add replicas", retry_after_s=1.0 + held - s.slots)

    def _fits(self, request: GenerationRequest) -> bool:
        _, _, context = self.engine.layout(request.kvs)  # InvalidBlockError for a wrong block: now
        final = self.engine.token_ids(request.final_ids)
        return context + len(final) + request.max_new_tokens <= self.settings.slot_tokens

    async def _batched(self, request: GenerationRequest) -> AsyncIterator[int]:
        ticket = _Ticket(request)
        self._adds.append(ticket)
        self._report()
        self._start_driver()
        finished = False
        try:
            while True:
                item = await ticket.queue.get()
                if item is _DONE:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
        finally:
            if not finished:  # the consumer left early: free the slot at the next step
                self._cancels.append(ticket)
                self._start_driver()

    async def _lone(self, request: GenerationRequest) -> AsyncIterator[int]:
        """engine.generate, one token per hold of the lock: for a request no slot can hold, or
        one that finds a graphed engine idle (stream() decides)."""
        self._alone += 1
        self._report()
        try:
            tokens = self.engine.generate(request.kvs, request.final_ids, request.max_new_tokens, request.temperature,
                                          stop_ids=request.stop_ids, seed=request.seed)
            while True:
                token = await locked_in_thread(self.lock, next, tokens, None)
                if token is None:
                    return
                yield token
        finally:
            self._alone -= 1
            self._report()

    # -- the driver ----------------------------------------------------------------------------

    def _start_driver(self) -> None:
        if self._driver is None or self._driver.done():
            self._driver = asyncio.get_running_loop().create_task(self._drive())

    async def _drive(self) -> None:
        """Steps while anything waits or runs; adds and cancels are applied between steps."""
        while True:
            if self._batch is None and self._adds:
                await self._make_batch()
            self._apply()
            if self._batch is None or not len(self._batch):
                return
            try:
                out = await locked_in_thread(self.lock, self._batch.step)
            except Exception as e:  # noqa: BLE001 - every answer of the batch gets it
                self._fail_all(e)
                continue
            for seq_id, token in out.tokens.items():
                ticket = self._tickets.get(seq_id)
                if ticket is not None:
                    ticket.queue.put_nowait(token)
            for seq_id in out.finished:
                ticket = self._tickets.pop(seq_id, None)
                if ticket is not None:
                    ticket.queue.put_nowait(_DONE)
            self._report()  # the step admitted waiting answers and ended finished ones
            await asyncio.sleep(0)  # let consumers and new requests run between steps

    def _apply(self) -> None:
        cancels, self._cancels = self._cancels, []
        for ticket in cancels:
            if ticket in self._adds:
                self._adds.remove(ticket)
            elif ticket.seq_id is not None and self._tickets.pop(ticket.seq_id, None) is not None:
                self._batch.cancel(ticket.seq_id)
        adds, self._adds = self._adds, []
        for ticket in adds:
            try:
                ticket.seq_id = self._batch.add(ticket.request)
            except Exception as e:  # noqa: BLE001 - the request's own error, to its consumer
                ticket.queue.put_nowait(e)
                continue
            self._tickets[ticket.seq_id] = ticket
        self._report()

    async def _make_batch(self) -> None:
        """The batch, made on first use in a thread under the engine lock: it allocates the KV
        pool and, on a GPU, captures its decode graphs (batch_graphs.py), which no other use of
        the engine may overlap. If it cannot be made, every waiting answer gets the error."""
        s = self.settings
        try:
            self._batch = await locked_in_thread(self.lock, self.engine.batch, s.slots, s.slot_tokens)
        except Exception as e:  # noqa: BLE001 - to every answer waiting for it
            adds, self._adds = self._adds, []
            for ticket in adds:
                ticket.queue.put_nowait(e)
            self._report()

    def _fail_all(self, error: BaseException) -> None:
        tickets, self._tickets = list(self._tickets.items()), {}
        for seq_id, ticket in tickets:
            self._batch.cancel(seq_id)
            ticket.queue.put_nowait(error)
        self._report()
