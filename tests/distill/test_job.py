"""DistillationJob on a tiny random Llama with the default tokenizer: a run from its RunStore row
to a registered version, the policy, cancelling, tenant scoping of the data, and a run killed
with SIGKILL after a checkpoint that resumes to the adapter an uninterrupted run ends with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from blockrag.distill import job as job_module
from blockrag.distill.adapter import Adapter
from blockrag.distill.checkpoints import RunObjects, load_adapter
from blockrag.distill.config import DistillConfig, LoraSettings
from blockrag.distill.job import (DistillationJob, JobStores, RunSpec, cancel_run, data_shape,
                                  gather_data, improves, start_run)
from blockrag.distill.fidelity import served_engine
from blockrag.errors import ConflictError, InvalidRequestError, NotFoundError
from blockrag.model_runtime import ModelSpec
from blockrag.registry import SHARED

ACME = ["The Harbour Office of Tolvik opens at seven. Ada Brenn, the harbour master, signs every permit "
        "for boats longer than twelve metres and keeps the tide tables for the northern quay.",
        "Fishing boats unload at the eastern pier. The ice house beside it was rebuilt in 1998 after a "
        "storm flooded the old one, and it now stores the catch of forty trawlers.",
        "Visitors park behind the customs shed. A ferry to Skarvholm leaves twice a day in summer and "
        "once a day in winter; tickets are sold on board and the crossing takes fifty minutes."]
GLOBEX = ["Globex ships turbine blades from its Marrowdale plant. Quentin Vale runs the paint line, "
          "where every blade gets three coats of a grey polymer that resists salt spray.",
          "The Marrowdale plant employs nine hundred people on three shifts. Its canteen serves soup "
          "at noon and the night shift eats at two in the morning beside the loading docks.",
          "Blades leave by rail on Thursdays. Each wagon carries two blades strapped to steel cradles, "
          "and the train reaches the coast at Pellingford before dawn on Friday."]
CONFIG = DistillConfig(steps=4, examples_per_step=1, max_example_tokens=384, checkpoint_every=1, eval_examples=0,
                       warmup_steps=1, learning_rate=2e-3, lora=LoraSettings(rank=2, target_modules=("q_proj", "v_proj")))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A 2-layer random Llama over the default model's tokenizer, saved as a model directory."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from blockrag.models.loader import load_tokenizer

    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def one_thread():
    """Same float reductions in every process that trains (the resume test compares weights)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def stores(tmp_path) -> JobStores:
    stores = JobStores.open(f"sqlite:///{tmp_path}/index.db", str(tmp_path / "kv"))
    for tenant, texts in (("acme", ACME), ("globex", GLOBEX)):
        ids = stores.index.register_blocks(tenant, [(t, 40) for t in texts], collection="docs", document_id="d1")
        stores.questions.record(tenant, f"What does {tenant} say?", ids[:2], "base")
    yield stores
    stores.close()


def spec(tiny_dir: Path, **changes) -> RunSpec:
    base = RunSpec(collection="docs", examples=4, eval_questions=2, model=ModelSpec(model=str(tiny_dir)), config=CONFIG)
    return replace(base, **changes)


def test_a_run_trains_evaluates_and_registers_a_version_of_its_tenant(tiny_dir, stores):
    reports = []
    run = start_run(stores.runs, stores.index, "acme", spec(tiny_dir))
    assert run.status == "pending" and run.total_steps == 4
    done = DistillationJob(run.run_id, stores, report=reports.append).run()
    assert done.status == "succeeded", done.error
    assert done.step == 4 and done.checkpoint_key == RunObjects(stores.store, run.run_id).checkpoint_key
    training = [r for r in reports if r["phase"] == "training"]
    assert sorted({r["step"] for r in training}) == [1, 2, 3, 4]
    assert {"loss", "kl", "tokens_per_s"} <= training[-1].keys() and training[-1]["tokens_per_s"] > 0
    version = stores.registry.get(done.version_id)
    assert version.tenant == "acme" and version.status == "candidate" and version.parent_version is None
    assert version.training["run_id"] == run.run_id and version.training["data"]["source"] == "collection"
    assert version.training["data"]["logged_questions"] == 1
    e = version.evaluation
    assert {"kl", "accuracy", "active_kl", "active_accuracy", "base_kl", "base_accuracy", "full_accuracy"} <= e.keys()
    assert e["active_kl"] == e["base_kl"] and e["questions"] == 2  # nothing active: compared with the base
    adapter = load_adapter(stores.store, version.adapter_key)
    from blockrag.models import load_model

    assert adapter.base_fingerprint == version.base_fingerprint
    assert served_engine(adapter, load_model(str(tiny_dir))[0]).fingerprint == version.fingerprint
    assert version.fingerprint != version.base_fingerprint


def test_the_policy_promotes_only_an_improvement_and_the_next_run_compares_with_it(tiny_dir, stores, monkeypatch):
    assert improves({"kl": 0.5, "active_kl": 0.6, "accuracy": 0.3, "active_accuracy": 0.3})
    assert not improves({"kl": 0.5, "active_kl": 0.6, "accuracy": 0.2, "active_accuracy": 0.3})
    assert not improves({"kl": 0.6, "active_kl": 0.6, "accuracy": 0.9, "active_accuracy": 0.3})
    monkeypatch.setattr(job_module, "improves", lambda evaluation: True)
    first = DistillationJob(start_run(stores.runs, stores.index, "acme", spec(tiny_dir, auto_promote=True)).run_id,
                            stores).run()
    assert stores.registry.active("acme").version_id == first.version_id
    assert first.metrics["promoted"] is True
    monkeypatch.setattr(job_module, "improves", lambda evaluation: False)
    second = DistillationJob(start_run(stores.runs, stores.index, "acme", spec(tiny_dir, auto_promote=True)).run_id,
                             stores).run()
    version = stores.registry.get(second.version_id)
    assert version.parent_version == first.version_id and version.status == "candidate"
    assert version.evaluation["active_kl"] != version.evaluation["base_kl"]  # the active adapter was scored
    assert stores.registry.active("acme").version_id == first.version_id
    assert stores.registry.active("globex") is None  # acme's version never serves globex


def test_data_is_read_with_the_runs_tenant_only(tiny_dir, stores):
    acme = gather_data(spec(tiny_dir), "acme", stores.index, stores.questions)
    text = "\n".join(acme.documents)
    assert "Tolvik" in text and "Marrowdale" not in text
    assert [q for _, q in acme.logged] == ["What does acme say?"]
    assert all("Globex" not in p for passages, _ in acme.logged for p in passages)
    assert acme.description["tenant"] == "acme"
    with pytest.raises(NotFoundError, match="collection 'other' of tenant 'acme'"):
        start_run(stores.runs, stores.index, "acme", spec(tiny_dir, collection="other"))
    shared = gather_data(spec(tiny_dir, collection="", logged_questions=0), SHARED, stores.index, stores.questions)
    assert shared.description["source"] == "default corpus" and shared.logged == []
    with pytest.raises(InvalidRequestError, match="no such file or directory"):
        start_run(stores.runs, stores.index, "acme", spec(tiny_dir, collection="", directory="/no/such/dir"))


def test_one_run_at_a_time_per_scope_and_cancelling(tiny_dir, stores):
    first = start_run(stores.runs, stores.index, "acme", spec(tiny_dir))
    with pytest.raises(ConflictError, match="already going"):
        start_run(stores.runs, stores.index, "acme", spec(tiny_dir))
    start_run(stores.runs, stores.index, "globex", spec(tiny_dir)).run_id  # another scope may run
    assert cancel_run(stores.runs, first.run_id).status == "cancelled"  # pending: ends now
    assert DistillationJob(first.run_id, stores).run().status == "cancelled"  # and the job does nothing
    with pytest.raises(ConflictError, match="already ended"):
        cancel_run(stores.runs, first.run_id)

    running = start_run(stores.runs, stores.index, "acme", spec(tiny_dir))

    def cancel_at_step_two(record):
        if record.get("phase") == "training" and record["step"] == 2:
            cancel_run(stores.runs, running.run_id)

    ended = DistillationJob(running.run_id, stores, report=cancel_at_step_two).run()
    assert ended.status == "cancelled" and ended.error == "cancelled at step 2 of 4" and ended.version_id is None
    assert RunObjects(stores.store, running.run_id).load_checkpoint()["step"] == 2
    assert stores.registry.list("acme") == []


def test_a_bad_source_fails_the_run_with_its_reason(tiny_dir, stores, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("\n\n".join(ACME))
    run = start_run(stores.runs, stores.index, "acme", spec(tiny_dir, collection="", directory=str(tmp_path / "docs")))
    (tmp_path / "docs" / "a.txt").unlink()
    ended = DistillationJob(run.run_id, stores).run()
    assert ended.status == "failed" and "no .md/.txt/.rst documents" in ended.error


def test_config_overrides_and_spec_round_trip(tiny_dir):
    config = DistillConfig.from_dict({"lora": {"rank": 4}, "block_dropout": 0.1, "steps": 7})
    assert config.lora.rank == 4 and config.lora.alpha == LoraSettings().alpha and config.steps == 7
    with pytest.raises(InvalidRequestError, match="unknown keys"):
        DistillConfig.from_dict({"stepz": 1})
    with pytest.raises(InvalidRequestError, match="unknown lora keys"):
        DistillConfig.from_dict({"lora": {"ranks": 1}})
    with pytest.raises(InvalidRequestError, match="distillation config"):
        DistillConfig.from_dict({"steps": "many"})
    s = spec(tiny_dir, auto_promote=True)
    assert RunSpec.from_dict(s.to_dict()) == s
    with pytest.raises(InvalidRequestError, match="not both"):
        RunSpec(collection="a", directory="/b")
    assert data_shape(1536).max_block_tokens == 160
    shape = data_shape(384)
    assert 7 * shape.max_block_tokens + shape.answer_tokens + 64 <= 384
    with pytest.raises(InvalidRequestError, match="too small"):
        data_shape(200)


KILLED_RUN = textwrap.dedent("""
    import sys, time, torch
    from pathlib import Path
    from blockrag.distill.job import DistillationJob, JobStores
    torch.set_num_threads(1)
    database, objects, run_id, marker = sys.argv[1:5]

    def report(record):
        # step 3 is done but not checkpointed yet (on_step comes before on_checkpoint): wait to be killed
        if record.get("phase") == "training" and record["step"] == 3 and "checkpoint_step" in record \\
                and record["checkpoint_step"] == 2:
            Path(marker).write_text("at step 3")
            time.sleep(600)

    DistillationJob(run_id, JobStores.open(database, objects), report=report).run()
""")


def test_a_run_killed_after_a_checkpoint_resumes_to_the_uninterrupted_result(tiny_dir, stores, tmp_path):
    database, objects = f"sqlite:///{tmp_path}/index.db", str(tmp_path / "kv")
    killed = start_run(stores.runs, stores.index, SHARED, spec(tiny_dir, collection=""))  # the default corpus
    marker = tmp_path / "marker"
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, database, objects, killed.run_id, str(marker)],
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert process.poll() is None, f"the worker ended early (exit {process.returncode})"
        assert time.monotonic() < deadline, "the worker never reached step 3"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    assert process.wait(30) == -signal.SIGKILL
    objects_of_killed = RunObjects(stores.store, killed.run_id)
    assert objects_of_killed.load_checkpoint()["step"] == 2
    state = stores.runs.get(killed.run_id)
    assert state.status == "running" and state.step == 3  # it died mid-run

    reports = []
    resumed = DistillationJob(killed.run_id, stores, report=reports.append).run()
    assert resumed.status == "succeeded", resumed.error
    assert resumed.metrics["resumed_from_step"] == 2
    assert sorted({r["step"] for r in reports if r["phase"] == "training"}) == [3, 4]  # not from scratch
    assert stores.registry.get(resumed.version_id).tenant == SHARED  # default corpus, shared scope

    straight = start_run(stores.runs, stores.index, SHARED, spec(tiny_dir, collection=""))
    straight_run = DistillationJob(straight.run_id, stores).run()
    assert straight_run.status == "succeeded", straight_run.error
    assert RunObjects(stores.store, straight.run_id).load_examples()[0] == objects_of_killed.load_examples()[0]
    a = _adapter(stores, resumed.version_id).weights
    b = _adapter(stores, straight_run.version_id).weights
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    assert max(v.abs().max().item() for v in a.values()) > 0  # it trained


def _adapter(stores: JobStores, version_id: str) -> Adapter:
    return load_adapter(stores.store, stores.registry.get(version_id).adapter_key)
