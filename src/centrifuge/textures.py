"""Blends that only motion can split: two smooth random textures of one kind, each sliding its own way.

Any single frame of such a blend is just another texture of the kind (the sum of two independent smooth
noises), so nothing but how the two move tells the layers apart (Sec. 4's motion cue with every other cue taken
away). ``scripts/motion_toy.py`` trains on these alone, to ask whether a network can learn motion at all;
``train --motion-textures P`` mixes a share of them into the training blends.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["texture", "sliding_texture", "texture_layers"]

MAX_SPEED = 2  # pixels a frame, in each direction


def texture(gen: torch.Generator, height: int, width: int, cell: int = 4) -> torch.Tensor:
    """``[3, height, width]`` smooth random colours in [-1, 1]: noise on a grid of ``cell`` pixels, bicubic."""
    small = torch.rand(1, 3, height // cell + 2, width // cell + 2, generator=gen) * 2 - 1
    big = F.interpolate(small, scale_factor=cell, mode="bicubic", align_corners=False)[0]
    return big[:, :height, :width].clamp(-1, 1)


def sliding_texture(gen: torch.Generator, frames: int, size: int, velocity: tuple[int, int],
                    vmax: int = MAX_SPEED) -> torch.Tensor:
    """``[3, frames, size, size]``: a window moving ``velocity`` (rows, columns) pixels a frame over one texture."""
    room = size + 2 * vmax * frames
    tex = texture(gen, room, room, cell=max(2, size // 16))
    y0 = x0 = vmax * frames
    return torch.stack([tex[:, y0 + t * velocity[0]:y0 + t * velocity[0] + size,
                            x0 + t * velocity[1]:x0 + t * velocity[1] + size] for t in range(frames)], dim=1)


def texture_layers(gen: torch.Generator, frames: int, size: int, vmax: int = MAX_SPEED) -> torch.Tensor:
    """Two layers ``[2, 3, frames, size, size]`` in [-1, 1], sliding at two different whole velocities."""
    speeds = [(dy, dx) for dy in range(-vmax, vmax + 1) for dx in range(-vmax, vmax + 1)]
    a, b = torch.randperm(len(speeds), generator=gen)[:2].tolist()
    return torch.stack([sliding_texture(gen, frames, size, speeds[i], vmax) for i in (a, b)])

