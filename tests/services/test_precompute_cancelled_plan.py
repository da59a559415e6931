"""A Precompute call cancelled while it waits for the device gives back what its plan took: the
blocks it registered, their claims and the quota bytes its admission held. Before, they stayed
until they expired (the hold after 900 s), and meanwhile the tenant's byte quota refused writes
that would have fit. The deployment class runs without Ray, over SQLite and a directory store."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa
from tiny_versions import save_tiny_llama

from blockrag.v1 import precompute_pb2 as pb
from blockrag_services.precompute.deployment import Precompute

TENANT = "acme"
TEXT = "Ferries to Skarvholm leave the eastern pier at nine."


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def precompute(tmp_path, tiny_dir):
    precompute = Precompute.func_or_class({
        "database_url": f"sqlite:///{tmp_path}/index.db", "object_store_url": str(tmp_path / "kv"),
        "model": {"model": str(tiny_dir), "device": "cpu", "adapter": "none"}, "resources": {"torch_threads": 1},
        "quotas": {"max_stored_bytes": 10**9}})  # a quota, so that the plan holds bytes
    yield precompute
    precompute.models.close()


def rows(precompute: Precompute) -> dict[str, int]:
    with precompute.writer.index.engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                for t in ("blocks", "block_claims", "quota_holds")}


async def cancelled_while_waiting(precompute: Precompute) -> dict[str, int]:
    """The rows a plan took while its call waited behind another batch on the device."""
    await precompute.device_lock.acquire()  # another batch is encoding
    try:
        call = asyncio.ensure_future(precompute.Precompute(pb.PrecomputeRequest(texts=[TEXT], tenant=TENANT)))
        deadline = time.monotonic() + 60  # a bound on a hang, not a speed check
        while (taken := rows(precompute))["quota_holds"] < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # the plan runs in a thread, then the call waits for the device
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    finally:
        precompute.device_lock.release()
    return taken


def test_a_call_cancelled_before_its_turn_gives_back_its_plan(precompute):
    loop_rows: dict[str, int] = {}

    async def scenario() -> None:
        loop_rows.update(await cancelled_while_waiting(precompute))
        deadline = time.monotonic() + 60
        while rows(precompute) != {"blocks": 0, "block_claims": 0, "quota_holds": 0} and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the release runs in an executor thread

    asyncio.run(scenario())
    assert loop_rows == {"blocks": 1, "block_claims": 1, "quota_holds": 1}  # what the admitted plan took
    assert rows(precompute) == {"blocks": 0, "block_claims": 0, "quota_holds": 0}
    assert precompute.device_lock.locked() is False
    # and the block is written in full by the next call
    (block,) = asyncio.run(precompute.Precompute(pb.PrecomputeRequest(texts=[TEXT], tenant=TENANT))).blocks
    assert block.computed and rows(precompute) == {"blocks": 1, "block_claims": 0, "quota_holds": 0}
