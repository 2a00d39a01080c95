"""Compose: the stitched layers brought back to the input resolution, a chunk of frames at a time.

Predicted layers are upsampled (bilinear) to the input resolution and, with ``detail`` (the default), the
input's high-frequency residual ``V - up(down(V))`` is added to every layer. Since the blend model is
``V = (V1 + V2) / 2``, adding the same residual to each layer keeps the layers recomposing the full-resolution
input exactly as well as they recompose the low-resolution one; the price is that fine detail (edges, texture)
of both layers appears in each. Without ``detail`` the layers are soft.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..frames import resize, to_model, to_uint8
from .runner import Geometry

__all__ = ["COMPOSE_BUDGET", "Part", "compose", "compose_uint8"]

# Full-resolution composition and the preview work on chunks of at most this many float32 values: the
# temporaries set the peak memory, and small ones are also faster (less page-fault churn).
COMPOSE_BUDGET = 6_000_000


@dataclass(frozen=True)
class Part:
    """Consecutive frames of the video with their layers, in model units ([-1, 1]); :meth:`layer` composes one
    slot at the input resolution."""

    start: int  # index of the first frame in the video
    video: np.ndarray  # the input frames, uint8 [c, H, W, 3]
    inputs: Tensor  # the input, [3, c, H, W]
    inputs_low: Tensor  # the input as the model was given it, [3, c, h, w]
    low: Tensor  # the stitched model outputs, [n, 3, c, h, w]
    detail: Tensor | None  # added to every upsampled layer: the input's residual v - up(v_low), [3, c, H, W]

    def layer(self, k: int) -> Tensor:
        """Slot ``k`` at the input resolution, clamped to [-1, 1]: a new ``[3, c, H, W]``."""
        low = self.low[k]
        full = resize(low, tuple(self.inputs.shape[-2:]))
        if full is low:
            full = low.clone()  # not resized: the model's outputs are not to be clamped in place
        if self.detail is not None:
            full += self.detail
        return full.clamp_(-1, 1)


def compose(chunk: Tensor, frames: list[np.ndarray] | np.ndarray, start: int, geometry: Geometry, detail: bool,
            inputs_low: Tensor) -> Iterator[Part]:
    """``chunk``: stitched layers ``[n, 3, c, h, w]`` of ``frames[:c]``, the video's frames from ``start``;
    ``inputs_low``: those frames as the model was given them ``[3, c, h, w]`` (the runner's resize, not redone).
    The slots are composed one at a time (:meth:`Part.layer`), each read by the statistics while it is in the
    cache: all of them at once are ``[n, 3, c, H, W]`` temporaries several times the cache."""
    n, c = chunk.shape[0], chunk.shape[2]
    width, height = geometry.full
    step = max(1, COMPOSE_BUDGET // (n * 3 * height * width))
    for a in range(0, c, step):
        b = min(c, a + step)
        video = np.stack(frames[a:b])
        # One copy into the standard layout (none if it is already in it): each slot's resize and the
        # statistics' flattened rows would otherwise gather the strided chunk again.
        low = chunk[:, :, a:b].contiguous()
        v, v_low = to_model(video), inputs_low[:, a:b]
        residual = None
        if not geometry.resized:
            v_low = v
        elif detail:
            residual = v - resize(v_low, (height, width))
        yield Part(start + a, video, v, v_low, low, residual)


def compose_uint8(chunk: Tensor, frames: list[np.ndarray] | np.ndarray, start: int, geometry: Geometry,
                  detail: bool, inputs_low: Tensor) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """What is written: ``(start, input uint8 [c, H, W, 3], layers uint8 [k, c, H, W, 3])`` per piece of
    ``chunk`` (``[k, 3, c, h, w]``), as :func:`compose` then :func:`~centrifuge.frames.to_uint8` would give to
    within a level of float rounding, in fewer passes over full-resolution values: in levels (0-255) the layer
    is ``up(127.5 low) + 127.5`` and the detail ``127.5 (v - up(v_low))``, so their sum is
    ``up(127.5 low) + u - up(127.5 v_low)`` with ``u`` the input's own levels."""
    k, c = chunk.shape[0], chunk.shape[2]
    width, height = geometry.full
    step = max(1, COMPOSE_BUDGET // ((k + 1) * 3 * height * width))
    for a in range(0, c, step):
        b = min(c, a + step)
        video = np.stack(frames[a:b])
        if not geometry.resized:
            yield start + a, video, to_uint8(chunk[:, :, a:b].clamp(-1, 1))
            continue
        low = chunk[:, :, a:b]
        if detail:  # one resize for the layers and the input
            up = resize(torch.cat([low, inputs_low[None, :, a:b]]).mul_(127.5), (height, width))
            layers = up[:k].add_(torch.from_numpy(video).permute(3, 0, 1, 2).float().sub_(up[k]))
        else:
            layers = resize(low * 127.5, (height, width)).add_(127.5)
        layers = layers.round_().clamp_(0, 255).to(torch.uint8)
        yield start + a, video, layers.movedim(-4, -1).contiguous().numpy()
