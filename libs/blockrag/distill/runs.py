"""A block-distillation run as the platform handles it before and around training: its spec, the
stores its row and results live in, and the verbs on that row (start, cancel, the promotion policy).

Apart from blockrag.distill.job (which trains, and so imports torch and transformers) so that the
admin replica and the runner's bookkeeping start, list and cancel runs without that stack.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blockrag.distill.config import DistillConfig
from blockrag.documents import read_documents
from blockrag.errors import ConflictError, InvalidRequestError, NotFoundError
from blockrag.kvcache.index import CacheIndex
from blockrag.kvcache.object_store import ObjectStore, open_object_store
from blockrag.model_spec import ModelSpec
from blockrag.registry import ModelRegistry, QuestionLog, Run, RunStore


@dataclass(frozen=True)
class RunSpec:
    """What a run trains on and how. The run's scope (tenant) is its RunStore row's; the spec is
    the row's config (to_dict).

    collection: a collection of the run's tenant in the index; directory: text files (.txt,
    .md, .rst) under a directory the job can read; neither: the default corpus.
    examples: training examples to build (config.eval_examples more are held out);
    eval_questions: held-out QA questions of the evaluation; logged_questions: at most this many
    of the tenant's latest logged questions join the data (0: none).
    """

    collection: str = ""
    directory: str = ""
    examples: int = 64
    eval_questions: int = 50
    logged_questions: int = 100
    auto_promote: bool = False
    model: ModelSpec = field(default_factory=ModelSpec)
    config: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        if self.collection and self.directory:
            raise InvalidRequestError("give a collection or a directory, not both (neither: the default corpus)")
        if self.examples < 1 or self.eval_questions < 1 or self.logged_questions < 0:
            raise InvalidRequestError(
                f"examples and eval_questions must be >= 1 and logged_questions >= 0; got examples={self.examples}, "
                f"eval_questions={self.eval_questions}, logged_questions={self.logged_questions}")

    @property
    def source(self) -> str:
        return "collection" if self.collection else "directory" if self.directory else "default corpus"

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**out, "model": dataclasses.asdict(self.model), "config": self.config.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        data = dict(data)
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise InvalidRequestError(f"run spec: unknown keys {unknown}")
        if "model" in data:
            data["model"] = ModelSpec(**data["model"])
        if "config" in data:
            data["config"] = DistillConfig.from_dict(data["config"])
        return cls(**data)


@dataclass
class JobStores:
    """The stores a job reads and writes; `open` builds them over one database and object store."""

    index: CacheIndex
    runs: RunStore
    registry: ModelRegistry
    questions: QuestionLog | None
    store: ObjectStore

    @classmethod
    def open(cls, database_url: str, object_store_url: str) -> JobStores:
        index = CacheIndex.open(database_url)
        # read only here: the retention settings matter to whoever prunes the log
        log = QuestionLog(index.engine, retention_days=36500, max_rows_per_tenant=1 << 30)
        return cls(index, RunStore(index.engine), ModelRegistry(index.engine), log, open_object_store(object_store_url))

    def close(self) -> None:
        self.index.close()


def start_run(runs: RunStore, index: CacheIndex, tenant: str, spec: RunSpec) -> Run:
    """A new pending run of scope `tenant` once its data source is known to exist (NotFoundError
    for an empty collection, InvalidRequestError for a missing directory); ConflictError while
    another run of the scope is going."""
    if spec.collection and not index.list_collection(tenant, spec.collection):
        raise NotFoundError(f"collection {spec.collection!r} of tenant {tenant or 'default'!r} has no blocks")
    if spec.directory:
        # fail fast: the job would fail later (its documents_in reads the same way)
        read_documents([Path(spec.directory).expanduser()])
    return runs.create(tenant, spec.to_dict(), spec.config.steps)


def cancel_run(runs: RunStore, run_id: str) -> Run:
    """Stop a run: a pending one ends cancelled now, a running one at its next step (the job
    polls the flag). ConflictError if it already ended."""
    run = runs.request_cancel(run_id)
    if run.status == "pending":
        try:
            run = runs.set_status(run_id, "cancelled", error="cancelled before it started")
        except ConflictError:  # it started meanwhile: the flag stops it
            run = runs.get(run_id)
    return run


def improves(evaluation: Mapping[str, float]) -> bool:
    """The automatic policy: promote only when the KL falls and the accuracy does not."""
    return evaluation["kl"] < evaluation["active_kl"] and evaluation["accuracy"] >= evaluation["active_accuracy"]


__all__ = ["JobStores", "RunSpec", "cancel_run", "improves", "start_run"]
