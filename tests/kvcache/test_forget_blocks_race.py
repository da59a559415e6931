"""CacheIndex.forget_blocks racing a writer of the same block, on SQLite and PostgreSQL, with
threads: writer X's write failed and X forgets the block its plan registered, while writer Y,
which planned the same block, records its write's intent (begin_writes).

The invariant: a block an intent names is never deleted (Y's entry could not commit: its row
has a foreign key to the block). On PostgreSQL the DELETE of forget_blocks checked "no intent
names it" with the snapshot its statement started with, so an intent committed while it waited
on the block's row was not seen, and the block went from under Y. A third transaction holding
the block's row makes that interleaving certain: X's DELETE reads, then waits on the row; Y's
intent commits meanwhile; the holder lets go.

Before its intent, Y's plan claims the blocks it registers (register_blocks' plan), so X's forget
keeps them between Y's plan and Y's intents, however the two interleave.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from fixtures.index_db import Clock

from blockrag.errors import InvalidRequestError
from blockrag.kvcache.index import CacheIndex, KVEntry
from blockrag.kvcache.index_engine import IndexConfig, create_index_engine, writer

TEXT = "The ferry to Skarvholm leaves the eastern pier twice a day."
WAIT_S = 20.0


class Call(threading.Thread):
    """One index call in a thread of its own: its result, or the error it raised."""

    def __init__(self, fn: Callable, *args):
        super().__init__(daemon=True)
        self.fn, self.args, self.result, self.error = fn, args, None, None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args)
        except Exception as e:  # noqa: BLE001 - the test looks at it
            self.error = e

    def outcome(self):
        self.join(WAIT_S)
        assert not self.is_alive(), f"{self.fn.__name__} did not return within {WAIT_S} s"
        return self.result, self.error


@contextmanager
def block_row_held(url: str, block_id: str) -> Iterator[Callable[[int], None]]:
    """A third transaction holding the block's row (PostgreSQL: FOR UPDATE; SQLite: the write
    lock) until the block ends; yields a wait until ``n`` other sessions wait on a lock."""
    engine = create_index_engine(IndexConfig(url))
    postgres = url.startswith("postgresql")
    try:
        with (engine if postgres else writer(engine)).begin() as conn:
            conn.execute(sa.text("SELECT 1 FROM blocks WHERE block_id = :b" + (" FOR UPDATE" if postgres else "")),
                         {"b": block_id})

            def waiting(n: int) -> None:
                if not postgres:  # SQLite shows no waiters: give them time to queue
                    time.sleep(0.5)
                    return
                query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND wait_event_type = 'Lock'")
                deadline = time.monotonic() + WAIT_S
                with engine.connect() as probe:
                    while probe.execute(query).scalar_one() < n:
                        assert time.monotonic() < deadline, f"fewer than {n} sessions waited on the block's row"
                        time.sleep(0.05)
                        probe.rollback()

            yield waiting
    finally:
        engine.dispose()


def test_an_intent_recorded_while_a_failed_write_forgets_the_block_keeps_it(index: CacheIndex, url: str) -> None:
    (block_id,) = index.register_blocks("t", [(TEXT, 12)])  # X's plan and Y's, one block
    entry = KVEntry(block_id, "m1", "file:///kv/y", 10)
    with block_row_held(url, block_id) as waiting:
        forget = Call(index.forget_blocks, "t", [block_id])  # X: its put failed
        waiting(1)
        begin = Call(index.begin_writes, "t", [entry])  # Y: about to put its frame
        begin.join(1.0)  # unfixed, Y's intent commits now, while X waits
    forgotten, error = forget.outcome()
    assert error is None, error
    _, refused = begin.outcome()

    if refused is None:  # Y's intent came first: X must keep the block, and Y's entry commits
        assert forgotten == [] and index.get_blocks("t", [block_id])[0] is not None
        index.finish_writes("t", [entry])
        assert index.lookup("t", [block_id], "m1")[0].hit
    else:  # X's delete came first: Y is refused before it records anything
        assert isinstance(refused, InvalidRequestError), refused
        assert forgotten == [block_id] and index.named([entry.location]) == set()


def test_a_block_planned_by_another_writer_is_not_forgotten(index: CacheIndex) -> None:
    """Writer X's plan registers a new block, writer Y's plan the same one (Y looked it up before X
    registered it, so both think it new); X's write fails before Y records its intent. Y's claim
    (register_blocks' plan) keeps the block: unclaimed, forget_blocks deleted it and begin_writes
    refused Y's write."""
    index.register_blocks("t", [(TEXT, 12)], plan="pln_x")  # X's plan: the block is new
    (block_id,) = index.register_blocks("t", [(TEXT, 12)], plan="pln_y")  # Y's plan
    assert index.forget_blocks("t", [block_id], plan="pln_x") == []  # X's write failed: ends X's plan
    entry = KVEntry(block_id, "m1", "file:///kv/y", 10)
    index.begin_writes("t", [entry])  # Y, after encoding
    index.finish_writes("t", [entry])
    index.end_plan("pln_y")
    assert index.lookup("t", [block_id], "m1")[0].hit
    assert claims(index) == []


def test_a_block_only_its_own_plan_claims_is_forgotten(index: CacheIndex, clock: Clock) -> None:
    (block_id,) = index.register_blocks("t", [(TEXT, 12)], plan="pln_x")
    assert index.forget_blocks("t", [block_id]) == []  # claimed by a plan not ended
    assert index.forget_blocks("t", [block_id], plan="pln_x") == [block_id]  # X's own claim ends first
    assert claims(index) == []
    # a plan whose writer died: its claim keeps the block until the sweep expires the claim
    (block_id,) = index.register_blocks("t", [(TEXT, 12)], plan="pln_dead")
    clock.tick(10)
    assert index.expire_writes(clock.now - 11) == [] and claims(index) == [("pln_dead", block_id)]
    assert index.forget_blocks("t", [block_id]) == []
    assert index.expire_writes(clock.now - 9) == [] and claims(index) == []
    assert index.forget_blocks("t", [block_id]) == [block_id]


@pytest.mark.parametrize("first", ["forget", "plan"])
def test_a_plan_registered_while_a_failed_write_forgets_the_block_keeps_it(index: CacheIndex, url: str,
                                                                           first: str) -> None:
    """X's write failed and X forgets the block its plan registered, while Y's plan registers (and
    claims) it; both wait on the block's row, and PostgreSQL lets the ``first`` to queue go first
    (SQLite: either). Either way the block is there for Y's write: Y's claim commits with its
    upsert of the row, so a forget after it sees the claim, and one before it is followed by Y's
    upsert inserting the row again. (Unclaimed, "plan" first lost the block.)"""
    (block_id,) = index.register_blocks("t", [(TEXT, 12)], plan="pln_x")
    calls = {"forget": lambda: index.forget_blocks("t", [block_id], plan="pln_x"),
             "plan": lambda: index.register_blocks("t", [(TEXT, 12)], plan="pln_y")}
    started: dict[str, Call] = {}
    with block_row_held(url, block_id) as waiting:
        for n, name in enumerate(sorted(calls, key=lambda c: c != first), start=1):
            started[name] = Call(calls[name])
            waiting(n)
    forget, plan = started["forget"], started["plan"]
    _, error = forget.outcome()
    assert error is None, error
    registered, error = plan.outcome()
    assert error is None and registered == [block_id], error
    entry = KVEntry(block_id, "m1", "file:///kv/y", 10)
    index.begin_writes("t", [entry])  # refused (unregistered block) if X's forget came second, unclaimed
    index.finish_writes("t", [entry])
    index.end_plan("pln_y")
    assert index.lookup("t", [block_id], "m1")[0].hit and claims(index) == []


def claims(index: CacheIndex) -> list[tuple[str, str]]:
    with index.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text("SELECT plan, block_id FROM block_claims ORDER BY plan"))]
