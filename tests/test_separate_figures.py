"""``centrifuge.separate``'s own figures through the public API, with a model whose outputs are known: the two
most dissimilar layers it chooses, the layer distances and the recomposition PSNR in ``layers.json``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import make_frames
from torch import nn

import centrifuge


class Offsets(nn.Module):
    """Layer ``k`` is the input plus the constant ``offsets[k]``: Eq. 3 between layers ``i`` and ``j`` is
    ``|c_i - c_j| / 2`` exactly (the gradient terms vanish), and any pair's mean recomposes the input with
    the constant error ``(c_i + c_j) / 2``."""

    def __init__(self, offsets: list[float]):
        super().__init__()
        self.offsets = offsets
        self.n_layers = len(offsets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x + c for c in self.offsets], dim=1)


def _frames(frames: int = 12) -> np.ndarray:
    """Moving content kept within [60, 195], so that no offset below (at most 0.45, 57 levels) is clipped."""
    return (60 + make_frames(frames, 32, 24, seed=3).astype(np.int32) * 135 // 255).astype(np.uint8)


def _psnr_255(error: float) -> float:
    """PSNR with peak 255 of a constant error given in model units ([-1, 1] is 0-255)."""
    return 20 * math.log10(255 / (abs(error) * 127.5))


CASES = [
    ([0.0, 0.1, -0.3, 0.25], (2, 3)),
    ([0.4, 0.0, 0.05, -0.45], (0, 3)),
    ([-0.1, 0.3, 0.0], (0, 1)),
]


@pytest.mark.parametrize(("offsets", "pair"), CASES)
def test_separate_chooses_the_two_most_dissimilar_layers(offsets, pair):
    result = centrifuge.separate(_frames(), model=Offsets(offsets), progress=False, device="cpu")
    assert tuple(result.chosen) == pair
    assert result.metadata["chosen"] == list(pair)
    assert result.order == list(pair)
    dist = np.array(result.metadata["layer_distances"])
    expected = np.abs(np.subtract.outer(offsets, offsets)) / 2
    np.testing.assert_allclose(dist, expected, atol=2e-5)
    # the layers returned are those slots: input + c, on the uint8 scale
    frames = _frames().astype(np.float64)
    for k, slot in enumerate(pair):
        assert np.abs(result.layers[k] - (frames + 127.5 * offsets[slot])).max() <= 1.0


def test_layers_json_reports_the_chosen_pair_and_its_recomposition_psnr(tmp_path):
    offsets = [0.0, 0.1, -0.3, 0.25]
    out = tmp_path / "layers"
    result = centrifuge.separate(_frames(), model=Offsets(offsets), out_dir=out, progress=False, device="cpu")
    meta = json.loads((out / "layers.json").read_text())
    assert meta["chosen"] == [2, 3] and tuple(result.chosen) == (2, 3)
    rec = meta["recomposition"]
    # chosen pair (2, 3): mean = input - 0.025 -> l1 3.1875, PSNR 20 log10(2 / 0.025) = 38.06 dB
    assert rec["chosen_pair"]["l1"] == pytest.approx(127.5 * 0.025, abs=1e-3)
    assert rec["chosen_pair"]["psnr_db"] == pytest.approx(_psnr_255(0.025), abs=1e-2)
    # all four layers: mean = input + 0.0125 -> PSNR 44.08 dB
    assert rec["all_layers"]["l1"] == pytest.approx(127.5 * 0.0125, abs=1e-3)
    assert rec["all_layers"]["psnr_db"] == pytest.approx(_psnr_255(0.0125), abs=1e-2)
    # the written files, decoded: H.264 adds a little error, so only a bound (well below the 100 dB cap)
    encoded = rec["chosen_pair_encoded"]["psnr_db"]
    assert 30 < encoded < _psnr_255(0.025) + 3
    assert meta["files"]["layers"] == ["layer_0.mp4", "layer_1.mp4"]
