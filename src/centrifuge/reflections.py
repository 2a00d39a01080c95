"""Blends that look like real reflections: one layer blurred, ghosted and faded, mixed in by a varying weight.

Eq. 1 mixes two sharp clips with one weight for the whole frame. What users separate is seldom like that: a
reflection in a window is out of focus (the glass focuses on what lies behind it), often doubled by the
pane's two surfaces (a ghost), lower in contrast, and stronger where the glass catches more light. With
``--reflection P`` a blend is made like that with probability P (:func:`reflection_blend`): its second layer
is turned into such a reflection, and the target is that layer **as it appears** (blurred, ghosted, faded),
since that is what a user wants back; the weight ``alpha`` becomes a smooth ramp across the frame around the
blend's ``alpha``. Every draw comes from the item's own random stream, so items stay a pure function of
their index.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

#: Ranges of the draws: blur sigma in pixels, ghost strength and offset in pixels, the contrast kept, the
#: largest change of the weight across the frame, and the bounds the weight stays within.
BLUR_SIGMA = (0.0, 2.0)
GHOST_GAIN = (0.3, 0.8)
GHOST_SHIFT = (2, 8)
CONTRAST = (0.4, 1.0)
ALPHA_SWING = 0.5
ALPHA_BOUNDS = (0.15, 0.85)


def blur(video: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of every frame, ``[3, T, H, W]``, borders replicated; ``sigma`` < 0.3 px: unchanged."""
    if sigma < 0.3:
        return video
    radius = max(1, math.ceil(2.5 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=video.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c, t, h, w = video.shape
    frames = video.reshape(c * t, 1, h, w)
    frames = F.conv2d(F.pad(frames, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    frames = F.conv2d(F.pad(frames, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return frames.reshape(c, t, h, w)


def shifted(video: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """``video`` ``[..., H, W]`` moved by ``(dx, dy)`` pixels, the uncovered border replicated."""
    h, w = video.shape[-2:]
    pad = (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0))
    flat = F.pad(video.reshape(-1, 1, h, w), pad, mode="replicate")
    top, left = max(-dy, 0), max(-dx, 0)
    return flat[..., top:top + h, left:left + w].reshape(video.shape)


def reflection_layer(video: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """``video`` ``[3, T, H, W]`` in [-1, 1] as a reflection: blurred, ghosted (a fainter copy a few pixels
    off, as from a pane's second surface) and with its contrast lowered towards its mean colour."""
    out = blur(video, rng.uniform(*BLUR_SIGMA))
    gain, shift, angle = rng.uniform(*GHOST_GAIN), rng.randint(*GHOST_SHIFT), rng.uniform(0, 2 * math.pi)
    ghost = shifted(out, round(shift * math.cos(angle)), round(shift * math.sin(angle)))
    out = (out + gain * ghost) / (1 + gain)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return (mean + rng.uniform(*CONTRAST) * (out - mean)).clamp(-1, 1)


def alpha_ramp(alpha: float, height: int, width: int, rng: random.Random) -> torch.Tensor:
    """A weight map ``[H, W]`` that changes linearly across the frame in a random direction, by up to
    :data:`ALPHA_SWING` from edge to edge, with ``alpha`` at the centre, kept within :data:`ALPHA_BOUNDS`."""
    angle, swing = rng.uniform(0, 2 * math.pi), rng.uniform(0, ALPHA_SWING)
    ys = torch.linspace(-0.5, 0.5, height)[:, None]
    xs = torch.linspace(-0.5, 0.5, width)[None, :]
    return (alpha + swing * (xs * math.cos(angle) + ys * math.sin(angle))).clamp(*ALPHA_BOUNDS)


def reflection_blend(layers: torch.Tensor, alpha: float,
                     rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """Two layers ``[2, 3, T, H, W]`` in [-1, 1] blended like a scene and its reflection.

    Returns ``(mix [3, T, H, W], layers [2, 3, T, H, W])``: the second layer made a reflection
    (:func:`reflection_layer`) and the two mixed as ``(1 - A) V1 + A V2'`` with ``A`` an
    :func:`alpha_ramp` around ``alpha`` (Eq. 1 with a weight per pixel).
    """
    second = reflection_layer(layers[1], rng)
    weight = alpha_ramp(alpha, *layers.shape[-2:], rng).to(layers.dtype)
    return (1 - weight) * layers[0] + weight * second, torch.stack([layers[0], second])
