"""Frames between their two formats: ``uint8 [..., T, H, W, 3]`` RGB (files, numpy) and the model's
``float32 [..., 3, T, H, W]`` in [-1, 1]; and resizing them."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["to_model", "from_model", "to_uint8", "resize", "resize_frames", "scaled_size"]


def to_model(frames_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``uint8 [..., T, H, W, 3]`` -> ``float32 [..., 3, T, H, W]`` in [-1, 1] (``x / 127.5 - 1``)."""
    if isinstance(frames_uint8, np.ndarray):
        # torch cannot wrap negative strides (e.g. a flipped view)
        frames_uint8 = np.ascontiguousarray(frames_uint8)
    x = torch.as_tensor(frames_uint8)
    if x.ndim < 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames [..., T, H, W, 3], got shape {tuple(x.shape)}")
    return (x.to(torch.float32) / 127.5 - 1.0).movedim(-1, -4).contiguous()


def from_model(x: torch.Tensor) -> np.ndarray:
    """``[..., 3, T, H, W]`` in [-1, 1] -> ``uint8 [..., T, H, W, 3]`` (clamped and rounded)."""
    if x.ndim < 4 or x.shape[-4] != 3:
        raise ValueError(f"expected [..., 3, T, H, W], got shape {tuple(x.shape)}")
    y = ((x.detach().to(torch.float32) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return y.movedim(-4, -1).cpu().contiguous().numpy()


def to_uint8(x: Tensor) -> np.ndarray:
    """In place, for values already in [-1, 1]: ``[..., 3, T, H, W]`` -> ``uint8 [..., T, H, W, 3]``."""
    return x.add_(1).mul_(127.5).round_().to(torch.uint8).movedim(-4, -1).contiguous().numpy()


def resize(x: Tensor, hw: tuple[int, int]) -> Tensor:
    """Bilinear resize of the last two dimensions (antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == hw:
        return x
    # One channel per plane: interpolation is per plane anyway, and it is several times faster than [N, 3, H, W].
    planes = x.reshape(-1, 1, *x.shape[-2:])
    shrink = hw[0] < x.shape[-2] or hw[1] < x.shape[-1]
    y = F.interpolate(planes, size=hw, mode="bilinear", align_corners=False, antialias=shrink)
    return y.reshape(*x.shape[:-2], *hw)


def resize_frames(x: Tensor, hw: tuple[int, int]) -> Tensor:
    """:func:`resize` of ``[..., T, H, W]`` as ``T`` images of all the leading values as channels: for tensors
    whose leading values lie innermost in memory (the model's channels-last output), the interpolation reads
    them in place, where :func:`resize`'s planes would first be gathered by a copy (2-3x slower there; the
    same speed on contiguous tensors). Equal to :func:`resize` up to float rounding."""
    if tuple(x.shape[-2:]) == hw:
        return x
    lead, (t, h, w) = x.shape[:-3], x.shape[-3:]
    images = x.movedim(-3, 0).reshape(t, math.prod(lead), h, w)
    shrink = hw[0] < h or hw[1] < w
    y = F.interpolate(images, size=hw, mode="bilinear", align_corners=False, antialias=shrink)
    return y.reshape(t, *lead, *hw).movedim(0, -3)


def scaled_size(width: int, height: int, size: int | None) -> tuple[int, int]:
    """(width, height) with the shortest side ``size`` (aspect kept); unchanged for None."""
    if size is None:
        return width, height
    scale = size / min(width, height)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    return (size, h) if width <= height else (w, size)
