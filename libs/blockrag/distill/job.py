"""DistillationJob: one block-distillation run, from its row in the RunStore to a registered
model version.

    setup      load the base model, gather the data (a collection of the run's tenant, a
               directory of text files or the default corpus, plus the tenant's logged
               questions, plus fact questions over invented entities: no one's data), build the examples (kept in the object store, so that a resumed run
               trains on the same ones), set up the recipe, resume from the run's checkpoint
    train      run_steps: every step reports loss, KL and tokens/s and polls the cancel flag; a
               checkpoint every config.checkpoint_every steps and at the end
    evaluate   the new adapter against the active version (None: the base model) on held-out QA
               questions (qa_set "heldout"): accuracy and mean answer-token KL(full || block)
    register   the adapter into the object store and a candidate ModelVersion of the run's scope
               with its evaluation; the automatic policy promotes it when asked and when it
               improves on the active version (lower KL, accuracy not lower)

Tenant safety: a run of tenant T reads T's collection and T's logged questions only, and
registers a version of scope T that serves T only; a run of the shared scope ("", whose data is
the index's "default" namespace, a directory or the default corpus) registers a shared version.

Ray-free: the Ray Train loop (services/blockrag_services/distillation) and tests drive it.
"""

from __future__ import annotations

import dataclasses
import gc
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from blockrag.attention import BlockAttentionEngine
from blockrag.distill.adapter import Adapter
from blockrag.distill.checkpoints import RunObjects, load_adapter
from blockrag.distill.data import DataConfig, documents_in
from blockrag.distill.example import Example
from blockrag.distill.fidelity import FidelityProbe, qa_questions, served_engine
from blockrag.distill.recipe import DistillationRecipe, StepMetrics
from blockrag.distill.runs import JobStores, RunSpec, cancel_run, improves, start_run
from blockrag.distill.training import build_examples, default_corpus, run_steps
from blockrag.errors import BlockRAGError, ConflictError, InvalidRequestError, NotFoundError
from blockrag.kvcache.index import CacheIndex
from blockrag.prompt import PromptTemplate
from blockrag.registry import ModelVersion, QuestionLog, Run
from blockrag.telemetry.metrics import observe_distill_step, set_distill_evaluation

Report = Callable[[dict[str, Any]], None]


# -- data -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunData:
    documents: list[str]
    logged: list[tuple[list[str], str]]  # (passages, question)
    description: dict[str, Any]


def gather_data(spec: RunSpec, tenant: str, index: CacheIndex, questions: QuestionLog | None) -> RunData:
    """The run's text and logged questions, all of `tenant` (index and log are read with the
    tenant; "" is the index's default namespace)."""
    if spec.collection:
        blocks = index.list_collection(tenant, spec.collection)
        if not blocks:
            raise NotFoundError(f"collection {spec.collection!r} of tenant {tenant or 'default'!r} has no blocks")
        # documents in ingest order, each in block order: one text whose paragraphs re-pack into blocks
        documents = ["\n\n".join(b.text for b in blocks)]
    elif spec.directory:
        documents = documents_in(Path(spec.directory).expanduser())
    else:
        documents = default_corpus()
    logged: list[tuple[list[str], str]] = []
    if questions is not None and spec.logged_questions:
        for q in questions.recent(tenant, limit=spec.logged_questions):
            passages = index.get_blocks(tenant, list(q.block_ids)) if q.block_ids else []
            if passages and all(passages):
                logged.append(([b.text for b in passages], q.question))
    description = {"source": spec.source, "tenant": tenant, "collection": spec.collection,
                   "directory": spec.directory, "documents": len(documents),
                   "characters": sum(map(len, documents)), "logged_questions": len(logged)}
    return RunData(documents, logged, description)


def data_shape(max_example_tokens: int) -> DataConfig:
    """Example shapes within the token budget: question examples hold the prompt's opening block
    and up to 6 passages, so blocks are at most a seventh of what the answer leaves."""
    default = DataConfig()
    room = max_example_tokens - default.answer_tokens - 64  # the final block and the target
    block = min(default.max_block_tokens, room // 7)
    if block < default.min_block_tokens:
        raise InvalidRequestError(f"max_example_tokens {max_example_tokens} is too small for an example; "
                                  f"use at least {7 * default.min_block_tokens + default.answer_tokens + 64}")
    return dataclasses.replace(default, max_block_tokens=block, max_blocks=min(default.max_blocks, room // block),
                               max_example_tokens=max_example_tokens)


# -- the job ----------------------------------------------------------------------------------------


class _Cancelled(Exception):
    """The cancel flag was seen outside the training loop."""


class DistillationJob:
    """One run (by id) from start to end; `run` leaves it succeeded, cancelled or failed."""

    def __init__(self, run_id: str, stores: JobStores, report: Report | None = None):
        """report: called with every progress record (also written to the RunStore)."""
        self.run_id = run_id
        self.stores = stores
        self.objects = RunObjects(stores.store, run_id)
        self.report = report
        self.metrics: dict[str, Any] = {}
        self.step = 0

    def run(self) -> Run:
        """Run to the end and return the run's row. Errors of the library (bad data, a model
        that cannot load...) fail the run with their message; anything else propagates, for the
        caller to retry (a new attempt resumes from the checkpoint) or to fail the run."""
        runs = self.stores.runs
        run = runs.get(self.run_id)
        if run.status == "pending":
            try:
                run = runs.set_status(self.run_id, "running")
            except ConflictError:  # cancelled before it started
                return runs.get(self.run_id)
        elif run.status != "running":
            return run
        self.tenant, self.step = run.tenant, run.step
        try:
            self.spec = RunSpec.from_dict(run.config)
            self.config = self.spec.config
            if runs.is_cancel_requested(self.run_id):
                raise _Cancelled
            self.setup()
            if not self.train():
                return self._end("cancelled", error=f"cancelled at step {self.step} of {self.config.steps}")
            adapter = self.recipe.adapter()
            self._release_training()
            evaluation, fingerprint, active = self.evaluate(adapter)
            set_distill_evaluation(self.tenant, evaluation)
            version, promoted = self.register(adapter, evaluation, fingerprint, active)
            self._progress({"phase": "done", "evaluation": evaluation, "version_id": version.version_id,
                            "promoted": promoted})
            return self._end("succeeded", version_id=version.version_id)
        except _Cancelled:
            return self._end("cancelled", error=f"cancelled before training (step {self.step})")
        except BlockRAGError as e:
            return self._end("failed", error=str(e))

    # -- setup -----------------------------------------------------------------------------------

    def setup(self) -> None:
        """Model, examples (built once per run), recipe, and the checkpoint to resume from."""
        self._progress({"phase": "loading model"})
        model, tokenizer = self._load_model()
        stored = self.objects.load_examples()
        if stored is None:
            examples, self.data = self._build_examples(model, tokenizer)
            self.objects.save_examples(examples, self.data)
        else:
            examples, self.data = stored
        self.train_examples, self.heldout = examples[: self.spec.examples], examples[self.spec.examples :]
        self.recipe = DistillationRecipe.for_tokenizer(self.config, model, tokenizer)
        self.recipe.setup()
        # the fresh adapter is zero: this is the base model under the student's block layout
        self.heldout_start = self.recipe.evaluate(self.heldout) if self.heldout else None
        state = self.objects.load_checkpoint()
        if state is not None:
            self.recipe.load_state_dict(state)
            self.step = self.recipe.step
            self.metrics["resumed_from_step"] = self.step

    def _build_examples(self, model, tokenizer) -> tuple[list[Example], dict]:
        data = gather_data(self.spec, self.tenant, self.stores.index, self.stores.questions)
        wanted = self.spec.examples + self.config.eval_examples

        def progress(done: int, total: int) -> None:
            if self.stores.runs.is_cancel_requested(self.run_id):
                raise _Cancelled
            self._progress({"phase": "building examples", "examples_built": done, "examples_wanted": total})

        # data_shape's budget keeps every example within max_example_tokens
        examples = build_examples(model, tokenizer, data.documents, wanted, self.config.seed,
                                  data_shape(self.config.max_example_tokens), data.logged, progress)
        return examples, {**data.description, "examples": len(examples)}

    def _load_model(self):
        from blockrag.models import load_model

        spec = self.spec.model
        return load_model(spec.model, dtype=spec.dtype, device=spec.resolved_device())

    # -- train -----------------------------------------------------------------------------------

    def train(self) -> bool:
        """Train up to config.steps; False when cancelled (after a checkpoint)."""
        if self.recipe.step >= self.config.steps:
            return True

        def on_step(m: StepMetrics) -> None:
            self.step = m.step
            self._progress({"phase": "training", **m.to_dict()})
            observe_distill_step(self.tenant, step=m.step, total_steps=self.config.steps, loss=m.loss, kl=m.kl,
                                 tokens=m.tokens)

        def on_checkpoint(recipe: DistillationRecipe) -> None:
            key = self.objects.save_checkpoint(recipe.state_dict())
            self._progress({"checkpoint_step": recipe.step}, checkpoint_key=key)

        run_steps(self.recipe, self.train_examples, self.config.steps, on_step, on_checkpoint,
                  lambda: self.stores.runs.is_cancel_requested(self.run_id))
        return self.recipe.step >= self.config.steps

    def _release_training(self) -> None:
        if self.heldout:
            self.metrics["heldout_kl"] = self.recipe.evaluate(self.heldout)
        self.recipe = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- evaluate --------------------------------------------------------------------------------

    def evaluate(self, adapter: Adapter) -> tuple[dict[str, float], str, ModelVersion | None]:
        """Scores of the new adapter, the active version and the base model on the held-out QA
        questions; the new version's served fingerprint; the active version compared with."""
        self._progress({"phase": "evaluating"})
        model, tokenizer = self._load_model()
        base = _engine(model)
        probe = FidelityProbe(base, PromptTemplate(tokenizer), qa_questions(self.spec.eval_questions))
        base_result = probe.score(base)
        active = self._comparable_active(adapter.base_fingerprint)
        # what the tenant is served now: the active version, else the model spec's own adapter
        # (the one shipped with the package, by default), else the base model
        serving = (load_adapter(self.stores.store, active.adapter_key) if active is not None and active.adapter_key
                   else None if active is not None else self.spec.model.load_adapter())
        active_result = base_result
        if serving is not None and serving.base_fingerprint == adapter.base_fingerprint:
            active_model, _ = self._load_model()
            active_result = probe.score(served_engine(serving, active_model))
            del active_model
        new_engine = served_engine(adapter, model)  # the base's weights are no longer needed
        new = probe.score(new_engine)
        evaluation = {"kl": new.kl, "accuracy": new.accuracy, "active_kl": active_result.kl,
                      "active_accuracy": active_result.accuracy, "base_kl": base_result.kl,
                      "base_accuracy": base_result.accuracy, "full_accuracy": probe.full.accuracy,
                      "questions": float(new.questions), "answer_tokens": float(new.answer_tokens)}
        if "heldout_kl" in self.metrics:
            evaluation["heldout_kl"] = self.metrics["heldout_kl"]
        if self.heldout_start is not None:
            evaluation["heldout_kl_start"] = self.heldout_start
        return evaluation, new_engine.fingerprint, active

    def _comparable_active(self, base_fingerprint: str) -> ModelVersion | None:
        """The version serving the run's tenant now, if it adapts the same base."""
        active = self.stores.registry.active(self.tenant)
        return active if active is not None and active.base_fingerprint == base_fingerprint else None

    # -- register --------------------------------------------------------------------------------

    def register(self, adapter: Adapter, evaluation: dict[str, float], fingerprint: str,
                 active: ModelVersion | None) -> tuple[ModelVersion, bool]:
        """The candidate version of the run's scope (the one an earlier attempt of this run
        registered, if any) and whether the automatic policy promoted it."""
        self._progress({"phase": "registering"})
        registry = self.stores.registry
        mine = [v for v in registry.list(self.tenant) if v.training.get("run_id") == self.run_id]
        if mine:
            version = mine[0]
        else:
            training = {"run_id": self.run_id, "data": self.data, "config": self.config.to_dict(),
                        "steps": self.config.steps, "final": {k: self.metrics.get(k) for k in ("loss", "kl")}}
            version = registry.register(
                self.tenant, self.spec.model.source, adapter.base_fingerprint,
                adapter_key=self.objects.save_adapter(adapter),
                parent_version=active.version_id if active else None, fingerprint=fingerprint, training=training)
        version = registry.set_evaluation(version.version_id, evaluation)
        promoted = self.spec.auto_promote and improves(evaluation)
        if promoted:
            version = registry.promote(version.version_id, self.tenant)
        return version, promoted

    # -- progress --------------------------------------------------------------------------------

    def _progress(self, update: dict[str, Any], checkpoint_key: str | None = None) -> None:
        self.metrics.update({k: _finite(v) for k, v in update.items()})
        record = {**self.metrics, "step": self.step}
        self.stores.runs.update_progress(self.run_id, self.step, record, checkpoint_key)
        if self.report is not None:
            self.report(record)

    def _end(self, status: str, error: str | None = None, version_id: str | None = None) -> Run:
        return self.stores.runs.set_status(self.run_id, status, error=error, version_id=version_id)


def _engine(model) -> BlockAttentionEngine:
    # no fusion or graphs: the model's modules are merged into afterwards
    return BlockAttentionEngine(model, fuse=False, cuda_graphs=False)


def _finite(value: Any) -> Any:
    """JSON-safe: NaN or infinity become None."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


__all__ = ["DistillationJob", "JobStores", "RunData", "RunSpec", "cancel_run", "data_shape",
           "gather_data", "improves", "start_run"]
