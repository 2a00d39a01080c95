"""The first pass's low-resolution store (``separation/store.py``): what is read back is what was added (to
float16), in either memory order of the model's output and across the chunks' boundaries; the file goes away."""

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


def _store_and_read(tmp_path, layers: torch.Tensor, inputs: torch.Tensor, slots: list[int],
                    step: int) -> tuple[torch.Tensor, torch.Tensor, LowResStore]:
    store = LowResStore(tmp_path / f"lowres-{step}", N, (W, H))
    for a, b in CHUNKS:
        store.add(layers[:, :, a:b], inputs[:, a:b])
    parts = [store.read(slots, a, min(T, a + step)) for a in range(0, T, step)]
    return torch.cat([p[0] for p in parts], 2), torch.cat([p[1] for p in parts], 1), store


@pytest.mark.parametrize("layout", ["plain", "channels-last"])
def test_the_store_reads_back_what_was_added(tmp_path, layout):
    layers, inputs = _layers(layout), torch.rand(3, T, H, W) * 2 - 1
    slots = [3, 1]
    want = layers[slots].half().float(), inputs.half().float()
    for step in (3, 11):  # reads across the chunks' boundaries, and all at once
        got_layers, got_inputs, store = _store_and_read(tmp_path, layers, inputs, slots, step)
        assert torch.equal(got_layers, want[0]) and torch.equal(got_inputs, want[1]), step
        assert store.written == T * FRAME and store.path.stat().st_size == T * FRAME
        store.remove()
        assert not store.path.exists()


def test_fits_asks_the_disk_for_the_whole_store(tmp_path):
    assert not fits(tmp_path, N, (W, H), 10**15 // FRAME)  # a petabyte
    assert fits(tmp_path, N, (W, H), 1000)  # a few megabytes
