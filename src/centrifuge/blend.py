"""Eq. 1 of the paper: synthetic training videos are weighted averages of real ones."""

from __future__ import annotations

import torch


def blend(v1: torch.Tensor, v2: torch.Tensor, alpha: float | torch.Tensor = 0.5) -> torch.Tensor:
    """Eq. 1: ``V = (1 - alpha) * V1 + alpha * V2``.

    ``v1`` and ``v2`` have the same shape (any layout); ``alpha`` is a scalar or broadcasts against them.
    """
    return (1 - alpha) * v1 + alpha * v2


def mix(videos: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Blend ``k`` videos: ``sum_i w_i * V_i``.

    Args:
        videos: ``[..., k, 3, T, H, W]``.
        weights: ``[..., k]``; uniform ``1/k`` when ``None``. For ``k = 2``, ``(1 - alpha, alpha)`` is Eq. 1.

    Returns:
        ``[..., 3, T, H, W]``.
    """
    k = videos.shape[-5]
    if weights is None:
        return videos.mean(dim=-5)
    weights = torch.as_tensor(weights, dtype=videos.dtype, device=videos.device)
    if weights.shape[-1] != k:
        raise ValueError(f"expected {k} weights, got shape {tuple(weights.shape)}")
    return (weights[..., None, None, None, None] * videos).sum(dim=-5)


def alpha_weights(alpha: float, k: int = 2) -> torch.Tensor:
    """Mixing weights: ``(1 - alpha, alpha)`` for two videos (Eq. 1), uniform ``1/k`` otherwise."""
    if k == 2:
        return torch.tensor([1.0 - alpha, alpha])
    return torch.full((k,), 1.0 / k)
