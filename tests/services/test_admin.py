"""The Admin servicer's distillation and registry RPCs, called in-process (no Ray) over a SQLite
index and a local object store, with a fake runner and fake handles; errors come back typed
(the gRPC status each maps to is tests/services/test_errors.py's)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from blockrag.distill.job import JobStores, RunSpec
from blockrag.errors import ConflictError, InvalidRequestError, NotFoundError
from blockrag.v1 import admin_pb2 as pb
from blockrag_services.admin.deployment import Admin
from blockrag_services.admin.messages import run_request
from blockrag_services.config import PlatformConfig
from blockrag_services.distillation.request import RunRequest


class Remote:
    """A Ray method stand-in: .remote(...) gives an awaitable of fn's result."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = []

    def remote(self, *args):
        self.calls.append(args)

        async def result():
            return self.fn(*args)

        return result()


@pytest.fixture
def config(tmp_path) -> PlatformConfig:
    return PlatformConfig(database_url=f"sqlite:///{tmp_path}/index.db", object_store_url=str(tmp_path / "kv"),
                          distill=PlatformConfig().distill.__class__(examples=8, config={"lora": {"rank": 2}}))


@pytest.fixture
def stores(config):
    stores = JobStores.open(config.database, config.object_store)
    yield stores
    stores.close()


@pytest.fixture
def admin(config, stores):
    def start(request: RunRequest):
        return stores.runs.create(request.tenant, request.spec(config).to_dict(), request.spec(config).config.steps)

    model = {"version": "fp-base", "source": "tiny", "dtype": "float32", "device": "cpu", "key_error": 0.0,
             "logit_error": 0.0}
    handles = {"generation": SimpleNamespace(model_info=Remote(lambda: model)),
               "precompute": SimpleNamespace(model_info=Remote(lambda: model))}
    runner = SimpleNamespace(start=Remote(start), configure=Remote(lambda args: None))
    return Admin.func_or_class(config.to_args(), handles=handles, runner=runner, watch_interval_s=0.01)


def call(coroutine):
    return asyncio.run(coroutine)


def test_start_get_list_and_cancel(admin, stores):
    request = pb.StartDistillationRequest(tenant="acme", steps=3, examples=4, eval_questions=2,
                                          config_json=json.dumps({"lora": {"alpha": 8}}), auto_promote=True)
    run = call(admin.StartDistillation(request)).run
    assert run.tenant == "acme" and run.status == "pending" and run.total_steps == 3
    spec = RunSpec.from_dict(json.loads(run.config_json))
    # request values, then the platform's defaults (examples would be 8), lora merged key by key
    assert (spec.examples, spec.eval_questions, spec.auto_promote) == (4, 2, True)
    assert (spec.config.lora.rank, spec.config.lora.alpha, spec.config.steps) == (2, 8, 3)
    assert call(admin.GetDistillation(pb.GetDistillationRequest(run_id=run.run_id))).run.run_id == run.run_id
    other = stores.runs.create("", {}, 5)
    listed = call(admin.ListDistillations(pb.ListDistillationsRequest()))
    assert {r.run_id for r in listed.runs} == {run.run_id, other.run_id}
    shared = call(admin.ListDistillations(pb.ListDistillationsRequest(tenant="")))
    assert [r.run_id for r in shared.runs] == [other.run_id]
    cancelled = call(admin.CancelDistillation(pb.CancelDistillationRequest(run_id=run.run_id))).run
    assert cancelled.status == "cancelled" and cancelled.error == "cancelled before it started"
    with pytest.raises(ConflictError, match="already ended"):
        call(admin.CancelDistillation(pb.CancelDistillationRequest(run_id=run.run_id)))
    with pytest.raises(NotFoundError, match="unknown distillation run"):
        call(admin.GetDistillation(pb.GetDistillationRequest(run_id="run_missing")))


@pytest.mark.parametrize(("changes", "message"), [
    ({"config_json": "{not json"}, "config_json is not JSON"),
    ({"config_json": "[1]"}, "must be a JSON object"),
    ({"config_json": "[" * 100_000 + "]" * 100_000}, "nested too deeply"),  # was a RecursionError: INTERNAL
    ({"steps": -1}, "steps must be >= 0"),
])
def test_bad_start_requests_are_invalid(changes, message):
    with pytest.raises(InvalidRequestError, match=message):
        run_request(pb.StartDistillationRequest(**changes))


def test_request_spec_refuses_bad_config(config):
    with pytest.raises(InvalidRequestError, match="unknown keys"):
        RunRequest(overrides={"stepz": 2}).spec(config)
    with pytest.raises(InvalidRequestError, match="not both"):
        RunRequest(collection="a", directory="/b").spec(config)
    scheduled = RunRequest.scheduled(PlatformConfig(distill=config.distill.__class__(tenant="acme", auto_promote=True)))
    assert scheduled.tenant == "acme" and scheduled.auto_promote


def test_watch_streams_progress_until_the_run_ends(admin, stores):
    run = stores.runs.create("acme", {}, 2)

    async def watch_while_training():
        async def train():
            for status_or_step in ("running", 1, 2, "succeeded"):
                await asyncio.sleep(0.05)
                if isinstance(status_or_step, int):
                    stores.runs.update_progress(run.run_id, status_or_step, {"phase": "training", "loss": 0.5})
                else:
                    stores.runs.set_status(run.run_id, status_or_step)

        trainer = asyncio.create_task(train())
        seen = [m.run async for m in admin.WatchDistillation(pb.WatchDistillationRequest(run_id=run.run_id))]
        await trainer
        return seen

    seen = call(watch_while_training())
    assert seen[0].status == "pending" and seen[-1].status == "succeeded"
    assert [m.step for m in seen if m.status == "running"][-1] == 2 and seen[-2].loss == 0.5
    assert len(seen) == len({(m.status, m.step, m.updated_at) for m in seen})  # changes only


def test_versions_list_promote_and_rollback(admin, stores):
    registry = stores.registry
    shared = registry.register("", "tiny", "fp-base", adapter_key="a", fingerprint="fp-1")
    registry.set_evaluation(shared.version_id, {"kl": 0.2, "accuracy": 0.5})
    acme = registry.register("acme", "tiny", "fp-base", adapter_key="b", parent_version=shared.version_id)
    listed = call(admin.ListModelVersions(pb.ListModelVersionsRequest()))
    assert [v.version for v in listed.versions] == ["fp-base"] and listed.versions[0].serving
    assert {v.version_id for v in listed.registered} == {shared.version_id, acme.version_id}
    row = next(v for v in listed.registered if v.version_id == shared.version_id)
    assert dict(row.evaluation) == {"kl": 0.2, "accuracy": 0.5} and row.fingerprint == "fp-1"

    promoted = call(admin.PromoteModelVersion(pb.PromoteModelVersionRequest(version=acme.version_id))).version
    assert promoted.status == "active" and promoted.tenant == "acme"  # no tenant given: the version's own scope
    with pytest.raises(ConflictError, match="cannot serve scope"):
        call(admin.PromoteModelVersion(pb.PromoteModelVersionRequest(version=acme.version_id, tenant="")))
    with pytest.raises(NotFoundError, match="unknown model version"):
        call(admin.PromoteModelVersion(pb.PromoteModelVersionRequest(version="mv_missing")))
    back = call(admin.RollbackModelVersion(pb.RollbackModelVersionRequest(tenant="acme")))
    assert not back.HasField("version")  # acme is back on the base model
    with pytest.raises(ConflictError, match="no promotion to roll back"):
        call(admin.RollbackModelVersion(pb.RollbackModelVersionRequest(tenant="acme")))


def test_a_finished_run_reports_its_version(admin, stores):
    run = stores.runs.create("", {}, 1)
    version = stores.registry.register("", "tiny", "fp-base", adapter_key="a")
    stores.runs.set_status(run.run_id, "running")
    stores.runs.set_status(run.run_id, "succeeded", version_id=version.version_id)
    reply = call(admin.GetDistillation(pb.GetDistillationRequest(run_id=run.run_id)))
    assert reply.run.version_id == version.version_id and reply.version.version_id == version.version_id
