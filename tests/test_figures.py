"""The figures users read (PSNR, ``evaluate``'s table, the most dissimilar pair), each against a reference that
does not come from the code under test: a hand computation, a closed form, or an oracle model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from centrifuge.evaluate import evaluate_clips
from centrifuge.losses import most_dissimilar_pair, pit_loss, psnr

PSNR_CAP_DB = 100.0  # MSE is clamped at 1e-10 (on pixels mapped to [0, 1])


def _clips(n: int = 3, frames: int = 4, size: int = 8, seed: int = 0) -> torch.Tensor:
    """``[n, 3, T, H, W]`` in [-1, 1], on the uint8 grid (as decoded clips are)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (n, 3, frames, size, size))).float() / 127.5 - 1


def _eq3(u: np.ndarray, v: np.ndarray) -> float:
    """Eq. 3 written out in NumPy for one pair of ``[3, T, H, W]`` videos (frames of equal size, so the mean
    over frames of per-frame means is the mean over the whole video)."""
    d = u.astype(np.float64) - v
    return 0.5 * (np.abs(d).mean() + np.abs(np.diff(d, axis=-1)).mean() + np.abs(np.diff(d, axis=-2)).mean())


# ---- PSNR by hand


def test_psnr_is_ten_log10_of_peak_squared_over_mse():
    # pixels in [0, 1]: half the values off by 0.2, half exact -> MSE = 0.02, MAE = 0.1
    a = torch.zeros(1, 3, 2, 4, 4)
    b = a.clone()
    b[..., :2, :] = 0.4  # 0.4 in model units ([-1, 1]) is 0.2 on pixels in [0, 1]
    expected = 10 * math.log10(1.0 / 0.02)  # 16.99 dB; the MAE would give 10 dB, -20 log10(MSE) 33.98 dB
    assert psnr(a, b).item() == pytest.approx(expected, abs=1e-4)
    assert psnr(b, a).item() == pytest.approx(expected, abs=1e-4)
    # a uniform error of 1/255 is 48.13 dB, the textbook figure of an off-by-one 8-bit image
    one_level = torch.full((1, 3, 1, 2, 2), 2 / 255)
    assert psnr(one_level, torch.zeros_like(one_level)).item() == pytest.approx(20 * math.log10(255), abs=1e-3)


def test_psnr_is_per_video_and_capped():
    a = torch.zeros(2, 3, 1, 2, 2)
    b = torch.stack([torch.zeros(3, 1, 2, 2), torch.full((3, 1, 2, 2), 0.2)])  # errors 0 and 0.1 on [0, 1]
    got = psnr(a, b)
    assert got.shape == (2,)
    assert got[0].item() == pytest.approx(PSNR_CAP_DB)
    assert got[1].item() == pytest.approx(20.0, abs=1e-4)


# ---- evaluate with oracle models


class Oracle(nn.Module):
    """Returns fixed layers for each pair it is shown, whatever the blend: ``table[k]`` for the k-th call's
    batch (``[B, n, 3, T, H, W]``)."""

    def __init__(self, table: list[torch.Tensor]):
        super().__init__()
        self.table, self.calls = table, 0

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        out = self.table[self.calls]
        self.calls += 1
        assert out.shape[0] == mix.shape[0]
        return out


class Blend(nn.Module):
    """The identity baseline as a model: every output layer is the blend itself."""

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        return torch.stack([mix, mix], dim=1)


PAIRS = [(0, 1), (1, 2), (0, 2)]


def test_a_model_returning_the_true_layers_in_any_order_scores_zero_loss_and_the_psnr_cap():
    clips = _clips()
    # the true layers in swapped order for the first pair, in order for the second, and among a third
    # useless output (n = 3) for the third: PIT assigns them, and the PSNR is of the matched layers
    grey = torch.zeros_like(clips[0])
    table = [torch.stack([clips[1], clips[0]])[None], torch.stack([clips[1], clips[2]])[None],
             torch.stack([grey, clips[2], clips[0]])[None]]
    # batch_size=1: one pair per call, so the oracle can answer each
    r2 = evaluate_clips(Oracle(table[:2]), clips, PAIRS[:2], batch_size=1)
    r3 = evaluate_clips(Oracle(table[2:]), clips, PAIRS[2:], batch_size=1)
    for r in (r2, r3):
        assert r["model_loss"] == 0.0 and r["ratio"] == 0.0
        assert r["psnr_db"] == pytest.approx(PSNR_CAP_DB)
        assert r["identity_psnr_db"] < 40  # the baseline is far from the cap: the cap is the oracle's own
    assert [row["psnr_db"] for row in r2["per_pair"]] == pytest.approx([PSNR_CAP_DB] * 2)


def test_the_identity_has_its_closed_form():
    # outputs = (A + B) / 2 for both layers: l(A, mix) = l(B, mix) = l(A, B) / 2 (Eq. 3 is homogeneous), so the
    # PIT loss is l(A, B); each layer is off by (A - B) / 2, i.e. (A - B) / 4 on pixels in [0, 1]
    clips = _clips(seed=1)
    result = evaluate_clips(Blend(), clips, PAIRS, batch_size=2)  # 2 batches: one full, one partial
    x = clips.numpy().astype(np.float64)
    losses = [_eq3(x[i], x[j]) for i, j in PAIRS]
    psnrs = [10 * math.log10(1 / np.mean(((x[i] - x[j]) / 4) ** 2)) for i, j in PAIRS]
    assert result["pairs"] == 3
    for r, loss, db in zip(result["per_pair"], losses, psnrs, strict=True):
        assert r["identity_loss"] == pytest.approx(loss, rel=1e-5)
        assert r["model_loss"] == pytest.approx(loss, rel=1e-5)
        assert r["identity_psnr_db"] == pytest.approx(db, abs=1e-3)
        assert r["psnr_db"] == pytest.approx(db, abs=1e-3)
    assert result["identity_loss"] == pytest.approx(sum(losses) / 3, rel=1e-5)
    assert result["identity_psnr_db"] == pytest.approx(sum(psnrs) / 3, abs=1e-3)
    assert result["ratio"] == pytest.approx(1.0, rel=1e-5)


def test_psnr_is_of_the_matched_layers_not_of_the_output_slots():
    clips = _clips(seed=2)
    a, b = clips[0], clips[1]
    near_a = (a + 0.1).clamp(-1, 1)  # off by 0.05 on [0, 1] wherever it is not clamped
    near_b = (b - 0.3).clamp(-1, 1)
    out = torch.stack([near_b, near_a])[None]  # slot 0 holds B's estimate, slot 1 A's
    r = evaluate_clips(Oracle([out]), clips, [(0, 1)], batch_size=1)
    expected = (psnr(near_a, a) + psnr(near_b, b)).item() / 2
    mse_a = np.mean(((near_a - a).numpy() / 2) ** 2)  # the hand computation of one of them
    assert psnr(near_a, a).item() == pytest.approx(10 * math.log10(1 / mse_a), abs=1e-3)
    assert r["psnr_db"] == pytest.approx(expected, abs=1e-4)
    unmatched = (psnr(near_b, a) + psnr(near_a, b)).item() / 2
    assert abs(unmatched - expected) > 3  # the slot order would give a very different figure
    assert r["model_loss"] == pytest.approx(_eq3(near_a.numpy(), a.numpy()) + _eq3(near_b.numpy(), b.numpy()),
                                            rel=1e-5)


def test_pit_assignment_is_the_cheapest_by_brute_force():
    clips = _clips(4, seed=3)
    targets = clips[:2][None]
    outputs = torch.stack([clips[3], clips[1], clips[2], clips[0] + 0.05])[None]
    loss, assign = pit_loss(outputs, targets)
    assert assign[0].tolist() == [3, 1]  # target 0 is nearest output 3, target 1 is output 1
    x = outputs[0].numpy()
    best = min(_eq3(x[i], clips[0].numpy()) + _eq3(x[j], clips[1].numpy())
               for i in range(4) for j in range(4) if i != j)
    assert loss.item() == pytest.approx(best, rel=1e-5)


# ---- the most dissimilar pair on known distances


def _offset_layers(offsets: list[float], seed: int = 0) -> torch.Tensor:
    """``[1, n, 3, T, H, W]``: one video plus a constant per layer. Eq. 3 between two of them is
    ``|c_i - c_j| / 2`` (the gradient terms vanish)."""
    base = _clips(1, seed=seed)[0] * 0.5
    return torch.stack([base + c for c in offsets])[None]


@pytest.mark.parametrize(("offsets", "pair"), [
    ([0.0, 0.1, -0.3, 0.25], (2, 3)),  # distances 0.275 (2, 3), 0.15 (0, 2), 0.2 (1, 2), ...
    ([0.4, 0.0, 0.05, -0.45], (0, 3)),
    ([0.3, -0.2, 0.0], (0, 1)),
])
def test_most_dissimilar_pair_on_known_distances(offsets, pair):
    assert tuple(most_dissimilar_pair(_offset_layers(offsets))[0].tolist()) == pair
