"""Stitch: one slot order across windows and tiles.

The model's output slots are arbitrary, so each window's layers are permuted to best match the previous
window's on their shared frames (the permutation minimising the summed Eq. 3 distance, as in the PIT loss,
compared at a shortest side of :data:`MATCH_SIZE` pixels), then the overlap is cross-faded with a linear ramp.
Without this a layer would jump between slots mid-video. Tiles are matched the same way to the tiles already
placed, and blended with feathered (linear ramp) weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..frames import resize_frames
from ..losses import assign_slots, pairwise_loss

__all__ = ["MATCH_SIZE", "match_slots", "WindowStitcher", "stitch_tiles"]

#: Slot matching compares layers with their shortest side reduced to at most this many pixels: choosing a
#: permutation needs no fine detail, and Eq. 3 at full inference size cost as much as a third of the run.
MATCH_SIZE = 64


def match_slots(reference: Tensor, outputs: Tensor) -> list[int]:
    """Permutation that aligns ``outputs`` with ``reference`` (both ``[n, 3, T, H, W]``, same frames).

    Returns ``perm`` such that ``outputs[perm]`` has, in slot ``j``, the output layer closest to
    ``reference[j]`` under the summed Eq. 3 distance (exhaustive over permutations for ``n <= 8``), computed
    with the shortest side reduced to :data:`MATCH_SIZE`.
    """
    h, w = reference.shape[-2:]
    if min(h, w) > MATCH_SIZE:
        hw = (max(1, round(h * MATCH_SIZE / min(h, w))), max(1, round(w * MATCH_SIZE / min(h, w))))
        reference, outputs = resize_frames(reference, hw), resize_frames(outputs, hw)  # channels-last windows
    return assign_slots(pairwise_loss(outputs[None].float(), reference[None].float())[0])


class WindowStitcher:
    """Joins per-window layer predictions into one video with a consistent slot order.

    Windows are added in order; each must start at the first frame not yet returned (the first frame of the
    kept tail). Its slots are permuted to match the tail (or, with no overlap, the previous window's last
    frame), the overlap is cross-faded with a linear ramp, and the first ``emit`` frames are returned as final.
    """

    def __init__(self) -> None:
        self.tail: Tensor | None = None  # blended frames of the previous window not returned yet
        self.last: Tensor | None = None  # last frame of the previous window, to match when there is no overlap
        self.windows = 0
        self.reordered = 0  # windows whose slots had to be permuted
        self.permutations: list[list[int]] = []

    def add(self, outputs: Tensor, emit: int) -> Tensor:
        """``outputs``: ``[n, 3, L, H, W]``, blended in place; returns its first ``min(emit, L)`` frames after
        matching/blending (views of ``outputs``)."""
        if outputs.dim() != 5:
            raise ValueError(f"expected [n, 3, T, H, W], got {tuple(outputs.shape)}")
        n = outputs.shape[0]
        ov = 0 if self.tail is None else self.tail.shape[2]
        if ov > outputs.shape[2]:
            raise ValueError(f"window of {outputs.shape[2]} frames is shorter than the {ov}-frame overlap")
        perm = list(range(n))
        if self.last is not None:
            ref, cand = (self.tail, outputs[:, :, :ov]) if ov else (self.last, outputs[:, :, :1])
            perm = match_slots(ref, cand)
            if perm != list(range(n)):
                self.reordered += 1
                outputs = outputs[perm]
            if ov:
                # In place on the overlap (the outputs are this stitcher's to change): a copy of the whole
                # window through torch.cat was a tenth of a run.
                ramp = torch.arange(1, ov + 1, dtype=outputs.dtype, device=outputs.device) / (ov + 1)
                ramp = ramp.view(1, 1, ov, 1, 1)
                outputs[:, :, :ov].mul_(ramp).add_(self.tail * (1 - ramp))
        self.permutations.append(perm)
        self.windows += 1
        emit = min(emit, outputs.shape[2])
        self.tail = outputs[:, :, emit:]
        self.last = outputs[:, :, -1:]
        return outputs[:, :, :emit]

    def flush(self) -> Tensor | None:
        """The kept tail (the end of the video); the stitcher is then empty."""
        tail, self.tail = self.tail, None
        return tail


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _ramp(length: int, overlap: int) -> Tensor:
    """Feathering weights: rise linearly over ``overlap`` cells at both ends, 1 in the middle, never 0."""
    i = torch.arange(length, dtype=torch.float32)
    return (torch.minimum(i + 1, length - i) / (overlap + 1)).clamp(max=1.0)


def stitch_tiles(forward: Callable[[Tensor], Tensor], x: Tensor, tile: int) -> tuple[Tensor, int]:
    """``forward`` on overlapping square tiles of ``x`` (``[3, T, h, w]``), joined: ``([n, 3, T, h, w], tiles)``."""
    _, t, h, w = x.shape
    th, tw = min(tile, h), min(tile, w)
    ov = tile // 4
    ys, xs = _tile_starts(h, th, ov), _tile_starts(w, tw, ov)
    weight = (_ramp(th, ov)[:, None] * _ramp(tw, ov)[None, :])  # [th, tw]
    acc: Tensor | None = None
    wsum = torch.zeros(h, w)
    for r, y0 in enumerate(ys):
        for c, x0 in enumerate(xs):
            out = forward(x[:, :, y0:y0 + th, x0:x0 + tw])
            if acc is None:
                acc = torch.zeros(out.shape[0], 3, t, h, w)
            else:
                # Regions already covered in raster order: rows above (previous tile row) and columns to
                # the left (previous tile in this row). Match slots on them before blending.
                canvas = acc[..., y0:y0 + th, x0:x0 + tw] / wsum[y0:y0 + th, x0:x0 + tw].clamp_min(1e-8)
                m = torch.zeros(out.shape[0], out.shape[0])
                if r > 0:
                    rows = ys[r - 1] + th - y0
                    m += pairwise_loss(out[None, ..., :rows, :], canvas[None, ..., :rows, :])[0]
                if c > 0:
                    cols = xs[c - 1] + tw - x0
                    m += pairwise_loss(out[None, ..., :cols], canvas[None, ..., :cols])[0]
                out = out[assign_slots(m)]
            acc[..., y0:y0 + th, x0:x0 + tw] += out * weight
            wsum[y0:y0 + th, x0:x0 + tw] += weight
    assert acc is not None
    return acc / wsum, len(ys) * len(xs)
