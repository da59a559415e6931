"""Next-token choice from the last position's logits."""

from __future__ import annotations

import torch

from blockrag.errors import InvalidRequestError


def sample_token(logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None) -> int:
    """logits: [vocab]. temperature 0 is greedy (argmax); above 0, a draw from softmax(logits / T)."""
    if temperature < 0:
        raise InvalidRequestError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return int(logits.argmax())
    # shifted so the largest logit is 0 before the division: a temperature as small as a float
    # allows (1e-45) then gives 0 for the largest and -inf for the rest, never inf - inf (NaN)
    logits = logits.float()
    probs = torch.softmax((logits - logits.max()) / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
