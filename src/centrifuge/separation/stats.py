"""Statistics: what ``layers.json`` records about a run.

Per-layer statistics, the pairwise layer distances (for the most dissimilar pair, Sec. 3.2) and recomposition
errors are accumulated on every :data:`STATS_STRIDE`-th frame; :func:`metadata` assembles the file.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from ..losses import PAIR_BLOCK, farthest_pair, pairwise_reconstruction_distance, psnr_from_mse
from ..tone import TONAL_AT, PairwiseGradientCorrelation, split_kind
from .compose import Part

__all__ = ["STATS_STRIDE", "Stats", "quality", "sampled", "most_dissimilar", "metadata"]

# Statistics, layer distances and recomposition errors are measured on every 4th frame (0, 4, 8, ...):
# consecutive frames are nearly identical, and on every frame they cost more than the inference.
STATS_STRIDE = 4


def quality(abs_sum: float, sq_sum: float, pixels: int, scale: float = 127.5) -> dict[str, float]:
    """L1 (0-255 units) and PSNR (peak 255, at most 100 dB) from sums of absolute/squared errors in units of
    1/scale."""
    l1 = abs_sum / max(pixels, 1) * scale
    mse = sq_sum / max(pixels, 1) * scale**2
    psnr = float(psnr_from_mse(torch.tensor(mse / 255.0**2, dtype=torch.float64)))
    return {"l1": round(l1, 4), "psnr_db": round(psnr, 3)}


class Stats:
    """Running sums for ``layers.json``, in model units ([-1, 1]); reported on the 0-255 scale.

    Full resolution (what is written): per-layer mean/std per channel, mean absolute difference to the input,
    and how well the mean of all layers recomposes the input. Inference resolution (what the model saw):
    the Eq. 3 distance between every two layers (to choose the most dissimilar pair) and how well each pair's
    mean recomposes the model's input; at full resolution the chosen pair's error is this error upsampled,
    since the same residual detail is added to every layer.
    """

    def __init__(self, n: int):
        self.n = n
        self.pairs = list(itertools.combinations(range(n), 2))
        self.pixels = 0
        self.sum = torch.zeros(n, 3, dtype=torch.float64)
        self.sq = torch.zeros(n, 3, dtype=torch.float64)
        self.mad = torch.zeros(n, dtype=torch.float64)
        self.all_abs = 0.0
        self.all_sq = 0.0
        self.low_pixels = 0
        self.frames = 0
        self.dist = torch.zeros(n, n, dtype=torch.float64)
        self.pair_abs = torch.zeros(len(self.pairs), dtype=torch.float64)
        self.pair_sq = torch.zeros(len(self.pairs), dtype=torch.float64)
        self.tone = PairwiseGradientCorrelation(n)

    def add(self, part: Part) -> None:
        """All of the part's frames (composed for :func:`sampled` frames only)."""
        with _one_thread():
            self.add_full((part.layer(k) for k in range(self.n)), part.inputs)
            self.add_low(part.low, part.inputs_low)

    def add_full(self, layers: Iterable[Tensor], video: Tensor) -> None:
        """``layers``: the ``n`` clamped layers, one at a time, each ``[3, c, H, W]``; ``video``: the input
        ``[3, c, H, W]``."""
        # One layer at a time, each read while it is in the cache: all n at once are [n, 3, c, H, W]
        # temporaries several times the cache, read by every sum.
        self.pixels += video[0].numel()
        total = torch.zeros_like(video)
        buf = torch.empty_like(video)
        for k, layer in enumerate(layers):
            total += layer
            self.sum[k] += layer.sum(dim=(1, 2, 3))
            self.sq[k] += torch.mul(layer, layer, out=buf).sum(dim=(1, 2, 3))
            self.mad[k] += float(torch.sub(layer, video, out=buf).abs_().sum()) / 3
        err = total.div_(self.n).sub_(video)
        self.all_abs += float(torch.abs(err, out=buf).sum()) / 3
        self.all_sq += float(err.square_().sum()) / 3

    def add_low(self, layers: Tensor, video: Tensor) -> None:
        """``layers``: raw model outputs ``[n, 3, c, h, w]``; ``video``: the model's input ``[3, c, h, w]``."""
        c = layers.shape[2]
        clamped = layers.clamp(-1, 1)
        self.tone.add(clamped)
        # Eq. 3 averages over frames: weight each part's distances by its frames for a per-frame mean.
        self.dist += pairwise_reconstruction_distance(layers) * c
        err_abs, err_sq = _pair_errors(clamped.reshape(self.n, -1), video.reshape(-1))
        rows, cols = zip(*self.pairs, strict=True)
        self.pair_abs += err_abs[rows, cols] / 3
        self.pair_sq += err_sq[rows, cols] / 3
        self.low_pixels += video[0].numel()
        self.frames += c

    def distances(self) -> Tensor:
        """``[n, n]``: the Eq. 3 distance of every two layers, a mean over the sampled frames."""
        return self.dist / max(self.frames, 1)

    def summary(self, chosen: tuple[int, int]) -> dict[str, Any]:
        count = max(self.pixels, 1)
        mean = self.sum / count
        std = (self.sq / count - mean.square()).clamp_min(0).sqrt()
        per_layer = [{"slot": k, "mean_rgb": [round(float(127.5 * (x + 1)), 3) for x in mean[k]],
                      "std_rgb": [round(float(127.5 * x), 3) for x in std[k]],
                      "mean_abs_diff_to_input": round(float(127.5 * self.mad[k] / count), 4)}
                     for k in range(self.n)]
        k = self.pairs.index(tuple(sorted(chosen)))
        corr = self.tone.matrix()
        chosen_corr = float(corr[chosen[0], chosen[1]])
        return {
            "content_or_tone": {
                "note": "gradient correlation of the two chosen layers at the inference resolution (per channel, so "
                        "each layer's mean and gain drop out): about 0 when they hold different content (a blend's "
                        f"true layers), about 1 for tonal variants of one picture; 'tone' from {TONAL_AT}",
                "chosen_pair": round(chosen_corr, 4), "split": split_kind(chosen_corr),
                "all_pairs": [[round(float(x), 4) for x in row] for row in corr]},
            "stats_frames": {"every": STATS_STRIDE, "count": self.frames},
            "layer_stats": per_layer,
            "recomposition": {
                "note": "input vs the mean of layers (blend model V = (V1 + V2) / 2); l1 in 0-255 units, PSNR "
                        "with peak 255 (at most 100 dB). chosen_pair: at the inference resolution, against the model's "
                        "input; all_layers: at full resolution; chosen_pair_encoded: the written files, decoded, "
                        "against the input",
                "chosen_pair": quality(float(self.pair_abs[k]), float(self.pair_sq[k]), self.low_pixels),
                "all_layers": quality(self.all_abs, self.all_sq, self.pixels),
            },
        }


_threads_lock = threading.Lock()
_threads_held = [0, 0]  # [runs inside _one_thread, the thread count to restore]


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Torch on one thread: the statistics are many short reductions, where a second thread gains little on a
    quiet machine and, when the other core is busy, every one of them waits for it (measured with 2 threads on
    a shared 2-core machine: the low-resolution part 45 s for what one thread does in 0.36-0.47 s, the
    full-resolution part 1.5 s for 0.25 s). The setting is the process's: concurrent runs (the web page) share
    it, and the last one out restores it."""
    with _threads_lock:
        if _threads_held[0] == 0:
            _threads_held[1] = torch.get_num_threads()
            torch.set_num_threads(1)
        _threads_held[0] += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_held[0] -= 1
            if _threads_held[0] == 0:
                torch.set_num_threads(_threads_held[1])


def _pair_errors(rows: Tensor, video: Tensor) -> tuple[Tensor, Tensor]:
    """For every two rows ``i < j`` of ``rows`` (``[n, N]``), with ``e = (r_i + r_j) / 2 - video`` (``video``:
    ``[N]``), the sums of ``|e|`` and ``e^2``: two float64 ``[n, n]``, filled above the diagonal. Blocked as
    :func:`~centrifuge.losses.pairwise_abs_sums`."""
    n, size = rows.shape
    abs_sum = torch.zeros(n, n, dtype=torch.float64)
    sq_sum = torch.zeros(n, n, dtype=torch.float64)
    buf = torch.empty(max(n - 1, 0), min(PAIR_BLOCK, size), dtype=rows.dtype)
    for a in range(0, size, PAIR_BLOCK):
        block, target = rows[:, a:a + PAIR_BLOCK], video[a:a + PAIR_BLOCK]
        for i in range(n - 1):  # row i against every later row at once
            e = torch.add(block[i + 1:], block[i], out=buf[:n - 1 - i, :block.shape[1]]).mul_(0.5).sub_(target)
            abs_sum[i, i + 1:] += e.abs_().sum(dim=1)
            sq_sum[i, i + 1:] += e.square_().sum(dim=1)
    return abs_sum, sq_sum


def sampled(start: int, count: int) -> list[int]:
    """Which of ``count`` frames from frame ``start`` the statistics read: every :data:`STATS_STRIDE`-th frame."""
    return [t for t in range(count) if (start + t) % STATS_STRIDE == 0]


def most_dissimilar(dist: Tensor) -> tuple[int, int]:
    """Sec. 3.2 on an accumulated distance matrix: the pair ``i < j`` farthest apart."""
    i, j = farthest_pair(dist[None])[0].tolist()
    return i, j


def metadata(run: dict[str, Any], stats: Stats, chosen: tuple[int, int], order: list[int],
             stitching: dict[str, int]) -> dict[str, Any]:
    """``layers.json`` (without its timings): ``run`` (input, model, settings, files), then the layers."""
    return {**run, "order": order, "chosen": list(chosen),
            "layer_distances": [[round(float(x), 5) for x in row] for row in stats.distances()],
            **stats.summary(chosen), "stitching": stitching}
