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


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` need a CUDA GPU: skipped, with the reason, where there is none."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none is available here)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
