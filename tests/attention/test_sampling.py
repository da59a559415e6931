"""sample_token: greedy at 0, draws from softmax(logits / T) above, any positive float accepted."""

import pytest
import torch

from blockrag.attention.sampling import sample_token
from blockrag.errors import InvalidRequestError

LOGITS = torch.tensor([1.0, 3.0, 2.5, -4.0])


@pytest.mark.parametrize("temperature", [1.4e-45, 1e-38, 1e-6])
def test_a_tiny_temperature_is_greedy(temperature):
    # found by fuzzing Generate: logits / 1e-45 overflowed to inf and the draw failed on NaN
    assert sample_token(LOGITS, temperature, torch.Generator().manual_seed(0)) == 1
    assert sample_token(torch.tensor([1e30, -1e30, 0.0]), temperature) == 0


def test_draws_follow_the_tempered_distribution():
    generator = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.tensor([sample_token(LOGITS, 1.0, generator) for _ in range(4000)]), minlength=4)
    expected = torch.softmax(LOGITS, -1) * 4000
    assert (counts.float() - expected).abs().max().item() < 60  # about 3 standard deviations of the largest
    assert counts[3].item() < 10  # p = 0.0006


def test_greedy_and_negative():
    assert sample_token(LOGITS, 0.0) == 1
    with pytest.raises(InvalidRequestError, match="temperature must be >= 0"):
        sample_token(LOGITS, -0.5)
