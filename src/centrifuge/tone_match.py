"""Blends that tone cannot split: every layer given the first layer's colour statistics.

A model that splits a blend by tone (a darker and a brighter layer, a warmer and a cooler one) wins where the
two scenes differ in colour and loses where they do not: the new-content pairs at or above the identity are
pairs whose global tone oracle is itself near the identity (docs/results.md). With ``--tone-match P`` a share P
of the training blends is made of layers with the same per-channel mean and standard deviation over the clip
(the colour transfer of Reinhard et al., 2001, here in RGB), so that in those blends only content and motion
tell the layers apart. The layers are matched before they are blended (by Eq. 1, or like a scene and its
reflection), so the targets are the matched layers, as they appear in the blend.
"""

from __future__ import annotations

import torch

#: Largest gain a layer's contrast is scaled by: a nearly flat clip is not stretched into noise.
MAX_GAIN = 4.0


def match_tone(video: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``video`` ``[3, T, H, W]`` in [-1, 1] with ``reference``'s per-channel mean and standard deviation (over
    the whole clip), the gain capped at :data:`MAX_GAIN`, clamped to [-1, 1]."""
    dims = tuple(range(1, video.dim()))
    mean, std = video.mean(dims, keepdim=True), video.std(dims, keepdim=True)
    ref_mean, ref_std = reference.mean(dims, keepdim=True), reference.std(dims, keepdim=True)
    gain = (ref_std / std.clamp_min(1e-6)).clamp(max=MAX_GAIN)
    return (ref_mean + gain * (video - mean)).clamp(-1, 1)


def tone_matched(layers: torch.Tensor) -> torch.Tensor:
    """Layers ``[k, 3, T, H, W]``, the first as it is and the later ones matched to it (:func:`match_tone`)."""
    return torch.stack([layers[0], *(match_tone(v, layers[0]) for v in layers[1:])])
