import torch

from blockrag.attention.mask import additive_mask, block_mask


def test_block_mask_exact_pattern():
    # blocks of 2 and 1 tokens, final block of 2
    expected = torch.tensor([
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(block_mask([2, 1], 2), expected)


def test_block_mask_without_final_is_block_diagonal():
    mask = block_mask([1, 2], 0)
    assert torch.equal(mask, torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 1]], dtype=torch.bool))


def test_additive_mask_values():
    mask = additive_mask(torch.tensor([[True, False]]), torch.float32)
    assert mask.shape == (1, 1, 1, 2)
    assert mask[0, 0, 0, 0] == 0 and mask[0, 0, 0, 1] == torch.finfo(torch.float32).min
