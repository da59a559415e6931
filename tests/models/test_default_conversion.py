"""Conversion of the bundled GGUF file into safetensors, in a fresh model home."""

import pytest
import torch

from blockrag.models import load_model


@pytest.mark.slow
def test_conversion_in_a_fresh_home_gives_the_same_model(tmp_path, monkeypatch, default_model):
    monkeypatch.setenv("BLOCKRAG_HOME", str(tmp_path))
    model, tokenizer = load_model()
    assert (tmp_path / "models" / "smollm2-135m-instruct" / "model.safetensors").is_file()
    assert not any(p.name.startswith(".") for p in (tmp_path / "models").iterdir())  # no temp dir left
    reference = dict(default_model[0].named_parameters())
    for name, param in model.named_parameters():
        assert torch.equal(param, reference[name]), name
    assert tokenizer("Veldmark").input_ids == default_model[1]("Veldmark").input_ids
