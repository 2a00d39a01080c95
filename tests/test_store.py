"""The first pass's low-resolution store (``separation/store.py``): what is read back is what was added (to
float16), whether it was held in memory, spilled to the file or split between them, in either memory order of
the model's output; memory never holds more than the budget; the file goes away."""

from __future__ import annotations

import pytest
import torch

from centrifuge.separation.store import LowResStore, fits

N, T, H, W = 4, 11, 5, 7
CHUNKS = [(0, 4), (4, 5), (5, 9), (9, 11)]  # as the stitcher emits them: uneven, one of a single frame
FRAME = (N + 1) * 3 * H * W * 2  # bytes of a frame's layers and input, float16


def _layers(layout: str) -> torch.Tensor:
    """``[n, 3, T, h, w]`` laid out plainly, or channels-last as the model's convolutions leave it."""
    torch.manual_seed(0)
    if layout == "plain":
        return torch.randn(N, 3, T, H, W) * 1.5
    return (torch.randn(T, H, W, N, 3) * 1.5).permute(3, 4, 0, 1, 2)


def _store_and_read(tmp_path, layers: torch.Tensor, inputs: torch.Tensor, budget: int, slots: list[int],
                    step: int) -> tuple[torch.Tensor, torch.Tensor, LowResStore]:
    store = LowResStore(tmp_path / f"lowres-{budget}", N, (W, H), budget)
    for a, b in CHUNKS:
        store.add(layers[:, :, a:b], inputs[:, a:b])
        assert store.held <= budget
    parts = [store.read(slots, a, min(T, a + step)) for a in range(0, T, step)]
    return torch.cat([p[0] for p in parts], 2), torch.cat([p[1] for p in parts], 1), store


@pytest.mark.parametrize("layout", ["plain", "channels-last"])
def test_held_spilled_and_split_stores_read_back_the_same(tmp_path, layout):
    layers, inputs = _layers(layout), torch.rand(3, T, H, W) * 2 - 1
    slots = [3, 1]
    want = layers[slots].half().float(), inputs.half().float()
    # (budget, frames held): all; none; the first chunk; the first two and the last (it fits again)
    for budget, held in ((1 << 20, 11), (0, 0), (4 * FRAME + 100, 4), (8 * FRAME, 7)):
        for step in (3, 11):  # reads across the chunks' boundaries, and all at once
            got_layers, got_inputs, store = _store_and_read(tmp_path, layers, inputs, budget, slots, step)
            assert torch.equal(got_layers, want[0]) and torch.equal(got_inputs, want[1]), (budget, step)
            assert (store.held, store.spilled) == (held * FRAME, (T - held) * FRAME)
            assert store.path.exists() == (store.spilled > 0)
            store.remove()
            assert not store.path.exists()


def test_fits_asks_the_disk_only_for_what_memory_does_not_hold(tmp_path):
    petabyte = 10**15 // FRAME
    assert not fits(tmp_path, N, (W, H), petabyte, budget=0)
    assert not fits(tmp_path, N, (W, H), petabyte, budget=10**15 // 2)  # half of it spilled
    assert fits(tmp_path, N, (W, H), petabyte, budget=2 * 10**15)  # all in memory: the disk is not asked
    assert fits(tmp_path, N, (W, H), 1000, budget=0)  # a few megabytes spilled
