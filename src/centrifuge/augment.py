"""Extra training augmentation for small datasets: synthetic camera motion, scale, colour filters, frozen
and reversed clips.

The paper trains on Kinetics-600 with the crop and flip of Sec. 4 only. With a handful of videos that is not
enough variety: a model trained on eight clips learns those clips. Each layer of a blend is therefore
widened independently, all from the item's own random stream (so batches stay a pure function of the step):

* **scale and camera motion**: the clip is decoded with its shortest side at ``zoom * size`` and a square
  box of side ``L`` in ``[size, zoom * size]`` is cut out of every frame and resized to ``size``. With
  probability ``motion`` the box moves linearly from one random box to another over the clip (a pan, a
  zoom, or both); otherwise it stays put (a random scale crop). Left-right flips as in the paper.
* **frozen clips** (probability ``freeze``): one frame repeated, as in Table 3; combined with motion this
  is a pan or zoom over a still image.
* **time reversal** (probability ``reverse``).
* **colour filters** (probability ``colour``): per-channel gains, brightness and contrast, sometimes a
  channel permutation or grey scale (Sec. 4.2's colour-cast layers are this kind of change).

Boxes are sampled with bilinear interpolation (``grid_sample``); at most ``zoom``-fold downsampling, so no
anti-aliasing is needed for the default ``zoom = 1.5``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    """Probabilities and ranges of the augmentation (defaults: the ``cpu-small`` preset's)."""

    zoom: float = 1.5  # decode shortest side at zoom * size; boxes range from size to zoom * size
    motion: float = 0.5  # probability that the box moves over the clip
    max_shift: float = 0.5  # largest move of the box centre, as a fraction of the box side
    freeze: float = 0.1
    reverse: float = 0.5
    colour: float = 0.8
    gain: float = 0.25  # per-channel gain in [1 - gain, 1 + gain]
    brightness: float = 0.1  # offset in [-b, b] on the [0, 1] scale
    contrast: float = 0.3  # contrast factor in [1 - c, 1 + c]
    permute: float = 0.2  # probability of a channel permutation (within a colour filter)
    grey: float = 0.1  # probability of grey scale (within a colour filter)


def _box(rng: random.Random, h: int, w: int, side: float) -> tuple[float, float, float]:
    """A square box ``(centre x, centre y, side)`` in pixels that fits in an ``h`` x ``w`` frame."""
    cx = rng.uniform(side / 2, w - side / 2)
    cy = rng.uniform(side / 2, h - side / 2)
    return cx, cy, side


def _moved(rng: random.Random, box: tuple[float, float, float], h: int, w: int, lo: float,
           aug: Augmentation) -> tuple[float, float, float]:
    cx, cy, side = box
    side = min(max(side * rng.uniform(0.8, 1.25), lo), min(h, w))
    shift = aug.max_shift * side
    cx = min(max(cx + rng.uniform(-shift, shift), side / 2), w - side / 2)
    cy = min(max(cy + rng.uniform(-shift, shift), side / 2), h - side / 2)
    return cx, cy, side


def _theta(box: tuple[float, float, float], h: int, w: int, flip: bool) -> list[list[float]]:
    """``affine_grid`` matrix that maps the output square onto ``box`` (normalised coordinates)."""
    cx, cy, side = box
    sx, sy = side / w, side / h
    return [[-sx if flip else sx, 0.0, 2 * cx / w - 1], [0.0, sy, 2 * cy / h - 1]]


def _colour(x: torch.Tensor, rng: random.Random, aug: Augmentation) -> torch.Tensor:
    """A random colour filter on ``[T, 3, H, W]`` floats in [0, 1]."""
    if rng.random() < aug.grey:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True).expand_as(x)
    elif rng.random() < aug.permute:
        order = list(range(3))
        rng.shuffle(order)
        x = x[:, order]
    gains = torch.tensor([rng.uniform(1 - aug.gain, 1 + aug.gain) for _ in range(3)]).view(1, 3, 1, 1)
    contrast = rng.uniform(1 - aug.contrast, 1 + aug.contrast)
    mean = x.mean()
    x = (x - mean) * contrast + mean
    return (x * gains + rng.uniform(-aug.brightness, aug.brightness)).clamp(0, 1)


def augment_clip(frames: np.ndarray, size: int, rng: random.Random, aug: Augmentation = Augmentation()) -> np.ndarray:
    """One augmented training clip from ``uint8 [T, H, W, 3]`` frames (shortest side ``~zoom * size``).

    Returns ``uint8 [T, size, size, 3]``.
    """
    t, h, w, _ = frames.shape
    if min(h, w) < size:
        raise ValueError(f"clip {w}x{h} is smaller than the crop {size}x{size}")
    if rng.random() < aug.freeze:
        frames = np.broadcast_to(frames[rng.randrange(t)], frames.shape)
    elif rng.random() < aug.reverse:
        frames = frames[::-1]
    hi = min(h, w, aug.zoom * size)
    start = _box(rng, h, w, rng.uniform(size, hi))
    end = _moved(rng, start, h, w, size, aug) if rng.random() < aug.motion else start
    flip = rng.random() < 0.5
    steps = np.linspace(0.0, 1.0, t) if t > 1 else np.zeros(1)
    boxes = [tuple(a + s * (b - a) for a, b in zip(start, end, strict=True)) for s in steps]
    theta = torch.tensor([_theta(b, h, w, flip) for b in boxes], dtype=torch.float32)  # [T, 2, 3]
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255)  # [T, 3, H, W]
    grid = F.affine_grid(theta, [t, 3, size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if rng.random() < aug.colour:
        x = _colour(x, rng, aug)
    return x.mul_(255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
