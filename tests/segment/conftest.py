"""Segmentation tests run torch on one thread."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tensors here are tiny: a second intra-op thread gains nothing, and on a shared CPU its
    spin-waits cost seconds per call."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
