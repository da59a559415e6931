"""BlockWriter: a write plan claims its blocks until its write ends, so a concurrent write of the
same block that fails (and forgets the blocks its plan registered) cannot take the block from
under it. Two writers over one SQLite index, the second one's object store failing its puts."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from blockrag.errors import ObjectStoreError
from blockrag.kvcache.object_store import LocalObjectStore
from blockrag.resolve import BlockWriter

TEXT = "Ada Brenn signs every permit for long boats."


class FailingPuts(LocalObjectStore):
    """A store whose puts fail, as an unreachable S3 does (the fault a local store cannot produce)."""

    def put(self, name: str, data: bytes) -> None:
        raise ObjectStoreError(f"cannot put {name}: the store is unreachable")


def claims(index) -> int:
    with index.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM block_claims")).scalar_one()


def test_a_failed_write_keeps_the_block_another_writer_planned(runtime, index, objects, tmp_path):
    x, y = BlockWriter(index, FailingPuts(tmp_path / "down")), BlockWriter(index, objects)
    x_plan = x.plan(runtime, "t", [TEXT])  # X: the block is new, X registered it
    y_plan = y.plan(runtime, "t", [TEXT])  # Y: X's block, not stored yet; Y encodes it too
    assert x_plan.registered == (x_plan.block_ids[0],) and y_plan.registered == ()
    with pytest.raises(ObjectStoreError):
        x.encode(runtime, "t", x_plan)  # X fails and forgets what its plan registered
    (written,) = y.encode(runtime, "t", y_plan)  # unclaimed: InvalidRequestError, the block was forgotten
    assert written.computed and index.lookup("t", [written.block_id], runtime.version)[0].hit
    assert claims(index) == 0


def test_a_failed_write_alone_forgets_its_blocks_and_its_claims(runtime, index, tmp_path):
    with pytest.raises(ObjectStoreError):
        BlockWriter(index, FailingPuts(tmp_path / "down")).write(runtime, "t", [TEXT])
    assert index.stats().blocks == 0 and claims(index) == 0


def test_a_plan_with_nothing_to_encode_claims_nothing(runtime, index, objects):
    writer = BlockWriter(index, objects)
    writer.write(runtime, "t", [TEXT])
    plan = writer.plan(runtime, "t", [TEXT])
    assert plan.to_encode == [] and plan.plan_id is None and claims(index) == 0
