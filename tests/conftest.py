"""Every test starts from the same process-wide torch settings, whatever ran before it."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _same_torch_threads():
    # `centrifuge bench --threads N`, run in-process by a test, sets the thread count of the whole process; a
    # later test would then compute with other summation orders than it does alone.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
