"""Content or tone: do two layers show different things, or one picture in two tones?

A tonal split (one layer darker, the other brighter or tinted) keeps the input's edges in both layers; a
content split (a reflection apart from what lies behind the glass, two blended scenes apart) puts different
edges in each. The figure is the correlation of the two layers' spatial gradients, per colour channel, averaged
over the channels. Gradients ignore each layer's per-channel offset and the normalised correlation ignores its
per-channel gain, so a layer's mean and scale drop out: tonal variants of one picture score about 1, unrelated
content about 0, inverted structure below 0.

The other side of the question: how far tone alone goes. :func:`tone_oracle` re-tones the blend into each true
layer as well as one gain and offset per channel can, knowing the layers; a model that scores near it separates
by tone, not content.
"""

from __future__ import annotations

import torch

#: At or above this gradient correlation, a pair of layers is called a tonal split (two true layers of a
#: blend score about 0; tonal variants of one clip about 1; docs/results.md has the measured spread).
TONAL_AT = 0.5


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def _normalised(ab: torch.Tensor, aa: torch.Tensor, bb: torch.Tensor) -> torch.Tensor:
    """Per-channel sums of products -> correlations (0 where a layer is flat), averaged over the last axis."""
    den = (aa * bb).sqrt()
    return torch.where(den > 0, ab / den.clamp(min=1e-300), torch.zeros_like(den)).mean(-1)


class PairwiseGradientCorrelation:
    """Running gradient correlations between every two of ``n`` layers given in pieces: ``add(layers)`` with
    ``layers`` ``[n, 3, T, H, W]``; ``matrix()`` is ``[n, n]`` (ones on the diagonal for non-flat layers)."""

    def __init__(self, n: int) -> None:
        self.gram = torch.zeros(n, n, 3, dtype=torch.float64)

    def add(self, layers: torch.Tensor) -> None:
        n = layers.shape[0]
        for g in _gradients(layers.to(torch.promote_types(layers.dtype, torch.float32))):
            # In float32 (or float64 if given), one frame and channel at a time (a float32 product over one
            # frame's pixels is good to about 1e-6), summed in float64: three times faster than all in float64.
            planes = g.reshape(n, -1, g.shape[-2] * g.shape[-1]).transpose(0, 1)  # [3 T, n, P]
            gram = torch.bmm(planes, planes.transpose(1, 2)).double()  # [3 T, n, n]
            self.gram += gram.unflatten(0, (3, -1)).sum(1).permute(1, 2, 0)

    def matrix(self) -> torch.Tensor:
        norms = self.gram.diagonal(dim1=0, dim2=1).T  # [n, 3]
        return _normalised(self.gram, norms[:, None], norms[None, :])


def gradient_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Gradient correlation of layers ``a`` and ``b`` (``[..., 3, T, H, W]``), one value per video: ``[...]``."""
    ga, gb = _gradients(a.double()), _gradients(b.double())
    ab = sum((x * y).sum((-3, -2, -1)) for x, y in zip(ga, gb, strict=True))
    aa = sum((x * x).sum((-3, -2, -1)) for x in ga)
    bb = sum((y * y).sum((-3, -2, -1)) for y in gb)
    return _normalised(ab, aa, bb).float()


def split_kind(correlation: float) -> str:
    """``"tone"`` for a tonal split, ``"content"`` otherwise (see :data:`TONAL_AT`)."""
    return "tone" if correlation >= TONAL_AT else "content"


def affine_fit(v: torch.Tensor, target: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``a v + b`` with ``a``, ``b`` the least-squares fit of ``target`` by ``v`` over ``dims`` (one pair per
    index of the other axes; ``v`` broadcasts against ``target``; a flat ``v`` gives ``target``'s mean)."""
    vm, tm = v.mean(dims, keepdim=True), target.mean(dims, keepdim=True)
    cov = ((v - vm) * (target - tm)).mean(dims, keepdim=True)
    var = ((v - vm) ** 2).mean(dims, keepdim=True)
    return cov / var.clamp_min(1e-6) * (v - vm) + tm


def tone_oracle(mix: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The best a tone-only split can do: each true layer approximated by one gain and offset of the blend per
    colour channel over the whole clip, fitted by least squares knowing the layers, clipped to [-1, 1].

    ``mix`` ``[B, 3, T, H, W]``, ``targets`` ``[B, k, 3, T, H, W]`` -> ``[B, k, 3, T, H, W]``, in the targets'
    order. It knows the answer, so it is a reference, not a method: a model near it only re-tones the blend.
    The identity (gain 1, offset 0) is one of its choices, so its squared error is never above the identity's.
    """
    return affine_fit(mix.unsqueeze(1), targets, (-3, -2, -1)).clamp(-1, 1)
