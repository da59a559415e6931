"""fuse_projections (fusion.py): q/k/v and gate/up as one matmul each, the model unchanged in its
outputs, its parameter names and values and its fingerprint."""

import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_model

from blockrag.attention.fusion import SlicedLinear, fuse_projections
from blockrag.models.fingerprint import model_fingerprint

ARCHS = ["llama31", "qwen2", "qwen3", "mistral"]  # qwen2's q/k/v have biases, qwen3 q/k norms


@pytest.mark.parametrize("name", ARCHS)
def test_fused_model_keeps_its_outputs_names_and_fingerprint(name):
    reference, model = tiny_model(name), tiny_model(name)
    ids = torch.randint(97, (2, 23), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = reference(input_ids=ids).logits
    assert fuse_projections(model) == 2 * 3  # attention and MLP of each of 3 layers
    assert fuse_projections(model) == 0  # idempotent
    with torch.inference_mode():
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    params, reference_params = dict(model.named_parameters()), dict(reference.named_parameters())
    assert params.keys() == reference_params.keys()
    assert all(torch.equal(params[k], reference_params[k]) for k in params)
    assert not any("gate_up" in key for key in model.state_dict())  # non-persistent: checkpoints unchanged
    assert model_fingerprint(model) == model_fingerprint(reference)


def test_members_are_views_into_one_weight():
    model = tiny_model("qwen2")
    fuse_projections(model)
    attention = model.model.layers[0].self_attn
    q, k, v = attention.q_proj, attention.k_proj, attention.v_proj
    assert isinstance(q, SlicedLinear) and q.group is k.group is v.group
    storage = q.group.weight.untyped_storage().data_ptr()
    assert {m.weight.untyped_storage().data_ptr() for m in (q, k, v)} == {storage}
    assert q.group.weight.shape == (64 + 2 * 32, 64)  # 4 query heads + 2 key and 2 value heads of 16


def test_a_member_called_with_another_input_computes_its_own():
    model = tiny_model("llama31")
    fuse_projections(model)
    attention = model.model.layers[1].self_attn
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(1, 5, 64, generator=g), torch.randn(1, 5, 64, generator=g)
    with torch.inference_mode():
        attention.q_proj(x)  # computes q, k and v of x
        k_of_y = attention.k_proj(y)  # another input: not x's slice
        v_of_x = attention.v_proj(x)
        k_again = attention.k_proj(x)  # x's k already taken: its own matmul, same value
    torch.testing.assert_close(k_of_y, F.linear(y, attention.k_proj.weight))
    torch.testing.assert_close(v_of_x, F.linear(x, attention.v_proj.weight))
    torch.testing.assert_close(k_again, F.linear(x, attention.k_proj.weight))


def test_linear_subclasses_such_as_adapter_layers_are_left_alone():
    class Wrapped(torch.nn.Linear):
        pass

    model = tiny_model("llama31")
    attention = model.model.layers[0].self_attn
    wrapped = Wrapped(64, 64, bias=False)
    wrapped.weight = attention.q_proj.weight
    attention.q_proj = wrapped
    assert fuse_projections(model) == 2 * 3 - 1  # that layer's attention is skipped, its MLP is not
    assert attention.q_proj is wrapped and type(attention.k_proj) is torch.nn.Linear
