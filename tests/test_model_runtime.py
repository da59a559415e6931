"""ModelRuntime with a distillation adapter: merged weights, sinks, another version."""

from __future__ import annotations

import pytest
import torch

from blockrag.attention.layout import Opening
from blockrag.distill.adapter import Adapter
from blockrag.distill.config import LoraSettings
from blockrag.distill.student import attach_lora
from blockrag.errors import ModelLoadError
from blockrag.model_runtime import ModelRuntime, ModelSpec
from blockrag.models import load_model, model_fingerprint


@pytest.fixture(scope="module")
def adapter_file(tmp_path_factory):
    """A random (non-zero) adapter for the default model, with sink token 0."""
    model, _ = load_model()
    base_fingerprint = model_fingerprint(model)
    lora = LoraSettings(rank=2, target_modules=("q_proj", "v_proj"))
    student = attach_lora(model, lora)
    with torch.no_grad():
        for name, p in student.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    path = tmp_path_factory.mktemp("adapter") / "adapter.safetensors"
    path.write_bytes(Adapter.from_student(student, lora, 0, base_fingerprint).to_bytes())
    return path


def test_an_adapter_is_served_merged_with_its_sinks(adapter_file, default_engine):
    runtime = ModelRuntime.load(ModelSpec(device="cpu", adapter=str(adapter_file)))
    assert runtime.engine.sink_token_id == 0
    assert runtime.version != default_engine.fingerprint  # every cache key changes with the version
    assert runtime.engine.gate_report.logit_error <= 1e-4
    assert runtime.describe()["adapter"] == str(adapter_file)
    blocks = [runtime.template.prefix_ids(), runtime.block_ids("The lighthouse of Veldmark is the Grey Lantern.")]
    final = runtime.template.final_ids("What is the lighthouse called?")
    served = runtime.engine.prefill(runtime.engine.encode_blocks(blocks), final).logits
    base = default_engine.prefill(default_engine.encode_blocks(blocks), final).logits
    assert (served - base).abs().max().item() > 1e-3


def test_a_missing_adapter_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        ModelSpec(adapter=str(tmp_path / "nope.safetensors")).load_adapter()
    assert ModelSpec(adapter="none").load_adapter() is None
    assert ModelSpec(model="some/other-model").load_adapter() is None  # the shipped one adapts the embedded model only


def test_the_default_spec_serves_the_shipped_adapter_with_its_opening(served_runtime, default_engine):
    shipped = ModelSpec().load_adapter()
    assert shipped is not None and shipped.sink_token_id is None and shipped.lora.rank == 16
    # trained with every block after the template's 27-token opening, 500 positions apart
    assert shipped.opening == Opening(tuple(served_runtime.template.prefix_ids()), 500)
    assert len(shipped.opening.tokens) == 27
    assert shipped.base_fingerprint == default_engine.fingerprint  # trained on exactly the embedded weights
    assert served_runtime.spec.adapter == "default" and served_runtime.engine.sink_token_id is None
    assert served_runtime.engine.opening == shipped.opening
    assert served_runtime.version != default_engine.fingerprint
