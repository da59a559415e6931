"""RunObjects: what a distillation run keeps in the object store, under names derived from its id.

    distill.<run>.examples.json      the training examples (token ids) and a description of the
                                     data they came from, written once: a resumed run trains on
                                     exactly the examples the first attempt built, even if the
                                     collection or the question log changed since
    distill.<run>.checkpoint.pt      torch.save of DistillationRecipe.state_dict(), replaced at
                                     every checkpoint
    distill.<run>.adapter.safetensors  the trained adapter (Adapter.to_bytes): a version's
                                     adapter_key

(Object names are single path segments, hence dots rather than slashes.) A checkpoint is
written whole under its name and the store replaces the object atomically (a temp file and a
rename locally, one PUT on S3): a run killed mid-write still finds the previous checkpoint.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence

import torch

from blockrag.distill.adapter import Adapter
from blockrag.distill.example import Example
from blockrag.errors import ModelLoadError, NotFoundError
from blockrag.kvcache.object_store import ObjectStore


def run_object_name(run_id: str, what: str) -> str:
    """The object name of one of a run's objects (run ids hold '_', which names may not)."""
    return f"distill.{re.sub(r'[^A-Za-z0-9.@=+-]', '-', run_id)}.{what}"


class RunObjects:
    """One run's examples, checkpoint and adapter in an object store."""

    def __init__(self, store: ObjectStore, run_id: str):
        self.store = store
        self.examples_key = run_object_name(run_id, "examples.json")
        self.checkpoint_key = run_object_name(run_id, "checkpoint.pt")
        self.adapter_key = run_object_name(run_id, "adapter.safetensors")

    def _get(self, key: str) -> bytes | None:
        return self.store.get(self.store.location_for(key))

    # -- examples ------------------------------------------------------------------------------

    def save_examples(self, examples: Sequence[Example], data: dict) -> None:
        """Keep the examples and `data` (a JSON object describing where they came from)."""
        rows = [[[list(b) for b in e.blocks], list(e.final), list(e.target)] for e in examples]
        payload = {"data": data, "examples": rows}
        self.store.put(self.examples_key, json.dumps(payload, separators=(",", ":")).encode())

    def load_examples(self) -> tuple[list[Example], dict] | None:
        """The run's examples and their data description, or None before they were built."""
        raw = self._get(self.examples_key)
        if raw is None:
            return None
        payload = json.loads(raw)
        return [Example.of(*row) for row in payload["examples"]], payload["data"]

    # -- checkpoint ------------------------------------------------------------------------------

    def save_checkpoint(self, state: dict) -> str:
        """Replace the run's checkpoint with `state` (a recipe's state_dict); its key."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.store.put(self.checkpoint_key, buffer.getvalue())
        return self.checkpoint_key

    def load_checkpoint(self) -> dict | None:
        """The latest checkpoint, or None when the run has none yet."""
        data = self._get(self.checkpoint_key)
        if data is None:
            return None
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises several kinds for a bad file
            raise ModelLoadError(f"the checkpoint {self.checkpoint_key} is unreadable ({type(e).__name__}: "
                                 f"{e}); start a new run") from e

    # -- adapter ---------------------------------------------------------------------------------

    def save_adapter(self, adapter: Adapter) -> str:
        """Store the trained adapter; its key (a model version's adapter_key)."""
        self.store.put(self.adapter_key, adapter.to_bytes())
        return self.adapter_key


def load_adapter(store: ObjectStore, adapter_key: str) -> Adapter:
    """The adapter of a model version (its adapter_key) from the object store."""
    data = store.get(store.location_for(adapter_key))
    if data is None:
        raise NotFoundError(f"adapter {adapter_key!r} is not in the object store {store!r}")
    return Adapter.from_bytes(data)
