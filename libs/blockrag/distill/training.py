"""The training loop shared by `blockrag model distill`, the Ray Train job and the benchmark:
examples from a corpus, a deterministic batch per step (so a resumed run sees what the
uninterrupted one would), steps, checkpoints, progress."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from blockrag.attention import BlockAttentionEngine
from blockrag.distill.data import DataConfig, TeacherAnswers, mixed_examples
from blockrag.distill.example import Example
from blockrag.distill.fidelity import greedy_answer
from blockrag.distill.teacher import greedy_answers
from blockrag.errors import InvalidRequestError
from blockrag.models.fingerprint import model_fingerprint
from blockrag.distill.recipe import DistillationRecipe, StepMetrics
from blockrag.prompt import PromptTemplate


def default_corpus() -> list[str]:
    """The text the shipped adapter is distilled on: the Python reference manual's help topics
    (79 topics, ~460K characters of technical English prose, under the PSF licence) and the
    bundled sample documents. Nothing of the fidelity set.

    The topics are a snapshot (corpus/python_reference.json.gz, from CPython 3.11's pydoc_data)
    rather than the running interpreter's pydoc_data, which changes between Python versions: the
    same command must build the same examples on every machine."""
    from importlib.resources import files

    from blockrag.samples import sample_documents

    snapshot = json.loads(gzip.decompress(files("blockrag.distill").joinpath("corpus/python_reference.json.gz").read_bytes()))
    topics = snapshot["topics"]
    return [topics[k] for k in sorted(topics)] + list(sample_documents().values())


def teacher_answerer(model: PreTrainedModel, max_new_tokens: int, batch_size: int = 1) -> TeacherAnswers:
    """prompts' ids -> the base model's greedy answers under full attention, each with the stop
    token that ended it (the student learns when to stop too). batch_size 1 decodes through the
    engine, one prompt at a time; more decodes that many prompts together (teacher.py)."""
    # no fusion (it would compile the model's modules in place, the same modules then trained)
    engine = BlockAttentionEngine(model, fuse=False, cuda_graphs=False)
    if batch_size > 1:
        return lambda prompts: greedy_answers(model, prompts, max_new_tokens, engine.stop_ids, batch_size)
    return lambda prompts: [greedy_answer(engine, [], ids, max_new_tokens) for ids in prompts]


def default_teacher_batch(model: PreTrainedModel) -> int:
    """Prompts per teacher call: 32 on a GPU (a batch costs about what one prompt costs there),
    1 on a CPU (no launch overhead to amortise, and the engine's path is the reference)."""
    return 32 if next(model.parameters()).device.type == "cuda" else 1


def build_examples(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, documents: Sequence[str],
                   count: int, seed: int, data: DataConfig | None = None,
                   logged: Sequence[tuple[Sequence[str], str]] = (),
                   progress: Callable[[int, int], None] | None = None,
                   teacher_batch: int | None = None) -> list[Example]:
    """Training examples from documents (and logged questions), teacher answers included.
    Run before the adapter is attached: the teacher is the model as given. teacher_batch:
    prompts per teacher call (default_teacher_batch when None)."""
    data = data or DataConfig()
    batch = teacher_batch or default_teacher_batch(model)
    with torch.inference_mode():
        return mixed_examples(documents, tokenizer, PromptTemplate(tokenizer),
                              teacher_answerer(model, data.answer_tokens, batch), data, count, seed, logged,
                              progress, batch_size=batch)


# DataConfig fields added after examples files shipped, with the value that builds what files
# built before them hold: at that value a field stays out of the digest, so those files still match
_LATER_FIELDS = {"cloze_fraction": 0.0, "fact_fraction": 0.0}


def cached_examples(path: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                    documents: Sequence[str], count: int, seed: int, data: DataConfig | None = None,
                    progress: Callable[[int, int], None] | None = None) -> list[Example]:
    """build_examples, kept in `path` (gzipped JSON of token ids). The teacher's answers are
    the slow part of a run (one greedy decode per question example: minutes on a CPU), so a
    second run with other training settings, or on another machine, reads them back. The file
    records a digest of what it was built from (model weights, documents, count, seed, data
    config); a file built from anything else is refused, never silently reused."""
    data = data or DataConfig()
    shape = {k: v for k, v in asdict(data).items() if _LATER_FIELDS.get(k, object()) != v}
    digest = hashlib.sha256(json.dumps({"model": model_fingerprint(model), "count": count, "seed": seed,
                                        "data": shape}, sort_keys=True).encode())
    for document in documents:
        digest.update(hashlib.sha256(document.encode()).digest())
    key = digest.hexdigest()
    if path.exists():
        stored = json.loads(gzip.decompress(path.read_bytes()))
        if stored.get("key") != key:
            raise InvalidRequestError(
                f"{path} holds examples built from another model, corpus, count, seed or data config; "
                f"delete it or give another --examples-file")
        return _examples_of(stored)
    examples = build_examples(model, tokenizer, documents, count, seed, data, progress=progress)
    payload = {"key": key, "examples": [[list(e.blocks), list(e.final), list(e.target)] for e in examples]}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(gzip.compress(json.dumps(payload).encode()))
    os.replace(partial, path)  # a killed build leaves no half file under the real name
    return examples


def read_examples(path: Path) -> list[Example]:
    """The examples of a file that cached_examples wrote, whatever they were built from."""
    return _examples_of(json.loads(gzip.decompress(path.read_bytes())))


def _examples_of(stored: dict) -> list[Example]:
    return [Example.of(*e) for e in stored["examples"]]


class LocalCheckpoint:
    """A run's state in a directory (`blockrag model distill --checkpoint-dir`): the recipe's
    state_dict, replaced atomically at every checkpoint, so a run longer than one sitting (a
    scheduler's or a device call's time limit) continues where it stopped, exactly as if it had
    not (the Ray job does the same in the object store, checkpoints.RunObjects)."""

    def __init__(self, directory: Path):
        from blockrag.distill.checkpoints import RunObjects
        from blockrag.kvcache.object_store import LocalObjectStore

        self.directory = directory
        self._objects = RunObjects(LocalObjectStore(directory), "local")

    def resume(self, recipe: DistillationRecipe) -> bool:
        """Load the saved state into `recipe` (after setup); False when there is none yet.
        InvalidRequestError when it was saved by a run with another config."""
        state = self._objects.load_checkpoint()
        if state is None:
            return False
        recipe.load_state_dict(state)
        return True

    def save(self, recipe: DistillationRecipe) -> None:
        self._objects.save_checkpoint(recipe.state_dict())


def step_batch(examples: Sequence[Example], step: int, per_step: int, seed: int) -> list[Example]:
    """The examples of step `step` (0-based): epochs of a seeded permutation, walked in order."""
    n = len(examples)
    out = []
    for i in range(step * per_step, (step + 1) * per_step):
        epoch, j = divmod(i, n)
        order = list(range(n))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        out.append(examples[order[j]])
    return out


def run_steps(recipe: DistillationRecipe, examples: Sequence[Example], until: int,
              on_step: Callable[[StepMetrics], None] | None = None,
              on_checkpoint: Callable[[DistillationRecipe], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> list[StepMetrics]:
    """Train from recipe.step up to step `until`; checkpoint every config.checkpoint_every steps
    and at the end. Stops early (after checkpointing) when should_stop() says so."""
    config = recipe.config
    done: list[StepMetrics] = []
    while recipe.step < until:
        metrics = recipe.train_step(step_batch(examples, recipe.step, config.examples_per_step, config.seed))
        done.append(metrics)
        if on_step:
            on_step(metrics)
        stopping = should_stop() if should_stop else False
        if on_checkpoint and (recipe.step % config.checkpoint_every == 0 or recipe.step == until or stopping):
            on_checkpoint(recipe)
        if stopping:
            break
    return done
