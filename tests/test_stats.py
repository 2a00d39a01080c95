"""The separation statistics' pair figures against the project's own definitions (Eq. 3 in ``losses.py``)."""

from __future__ import annotations

import torch

from centrifuge.losses import reconstruction_loss
from centrifuge.separation.stats import Stats


def test_the_pair_distances_are_eq3_and_the_pair_errors_are_the_mean_against_the_input():
    g = torch.Generator().manual_seed(0)
    n, c, h, w = 4, 5, 9, 11
    layers = torch.rand(n, 3, c, h, w, generator=g) * 2.4 - 1.2  # raw outputs: some beyond [-1, 1]
    video = torch.rand(3, c, h, w, generator=g) * 2 - 1
    stats = Stats(n)
    stats.add_low(layers, video)
    clamped = layers.clamp(-1, 1)
    for k, (i, j) in enumerate(stats.pairs):
        want = float(reconstruction_loss(layers[i], layers[j])) * c  # weighted by frames, as accumulated
        assert abs(float(stats.dist[i, j]) - want) < 1e-5 * max(1.0, want), (i, j)
        err = (clamped[i] + clamped[j]) / 2 - video
        assert abs(float(stats.pair_abs[k]) - float(err.abs().sum()) / 3) < 1e-3, (i, j)
        assert abs(float(stats.pair_sq[k]) - float(err.square().sum()) / 3) < 1e-3, (i, j)


def test_the_full_resolution_figures_are_the_plain_definitions():
    g = torch.Generator().manual_seed(1)
    n, c, h, w = 3, 2, 6, 7
    layers = (torch.rand(n, 3, c, h, w, generator=g) * 2.4 - 1.2).clamp(-1, 1)
    video = torch.rand(3, c, h, w, generator=g) * 2 - 1
    stats = Stats(n)
    stats.add_full(iter(layers), video)
    pixels = c * h * w
    torch.testing.assert_close(stats.sum / pixels, layers.double().mean(dim=(2, 3, 4)))
    torch.testing.assert_close(stats.sq / pixels, layers.double().square().mean(dim=(2, 3, 4)))
    torch.testing.assert_close(stats.mad / pixels, (layers - video).double().abs().mean(dim=(1, 2, 3, 4)))
    err = (layers.mean(0) - video).double()
    assert abs(stats.all_abs / pixels - float(err.abs().mean())) < 1e-6
    assert abs(stats.all_sq / pixels - float(err.square().mean())) < 1e-6
