"""Parameter and FLOP counts written from the published architecture, not from the model code (import with
``from reference_counts import ...``).

I3D (Carreira & Zisserman 2017) is Inception-v1 inflated to 3D: the stem and the channel table of every
``Mixed`` block below are those of the paper's Fig. 3 / DeepMind's ``kinetics-i3d``, with every 5x5 branch
replaced by a 3x3x3 convolution. Convolutions have no bias (BatchNorm follows each).
"""

from __future__ import annotations

from math import prod

import torch
from torch import nn

#: in, 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5" (3x3x3 in I3D), pool projection
MIXED = {
    "Mixed_3b": (192, 64, 96, 128, 16, 32, 32),
    "Mixed_3c": (256, 128, 128, 192, 32, 96, 64),
    "Mixed_4b": (480, 192, 96, 208, 16, 48, 64),
    "Mixed_4c": (512, 160, 112, 224, 24, 64, 64),
    "Mixed_4d": (512, 128, 128, 256, 24, 64, 64),
    "Mixed_4e": (512, 112, 144, 288, 32, 64, 64),
    "Mixed_4f": (528, 256, 160, 320, 32, 128, 128),
    "Mixed_5b": (832, 256, 160, 320, 32, 128, 128),
    "Mixed_5c": (832, 384, 192, 384, 48, 128, 128),
}

#: The decoder's stage widths at width 1 (docs/model.md), the skip each stage merges and the upsampling
#: ratio from the stage below (I3D strides: Conv3d_1a 2x2x2, pools 1x2x2 before Conv3d_2b and Mixed_3b,
#: 2x2x2 before Mixed_4b and Mixed_5b).
DECODER = [("Mixed_4f", 832, 256, (2, 2, 2)), ("Mixed_3c", 480, 64, (2, 2, 2)),
           ("Conv3d_2c_3x3", 192, 32, (1, 2, 2)), ("Conv3d_1a_7x7", 64, 16, (1, 2, 2)), ("input", 3, 8, (2, 2, 2))]


def scaled(c: int, width: float) -> int:
    """A channel count at ``width`` (at least 4, as the small presets define it)."""
    return max(4, round(c * width))


def i3d_convs(width: float = 1.0) -> tuple[list[tuple[int, int, int]], int]:
    """``([(in, out, kernel volume)], output channels)`` of every convolution up to ``Mixed_5c``."""
    s = [scaled(c, width) for c in (64, 192)]
    convs = [(3, s[0], 7 ** 3), (s[0], s[0], 1), (s[0], s[1], 3 ** 3)]
    prev = s[1]
    for _, b0, b1a, b1b, b2a, b2b, b3 in MIXED.values():
        b0, b1a, b1b, b2a, b2b, b3 = (scaled(c, width) for c in (b0, b1a, b1b, b2a, b2b, b3))
        convs += [(prev, b0, 1), (prev, b1a, 1), (b1a, b1b, 27), (prev, b2a, 1), (b2a, b2b, 27), (prev, b3, 1)]
        prev = b0 + b1b + b2b + b3
    return convs, prev


def i3d_parameters(width: float = 1.0, bn_per_channel: int = 2) -> int:
    """Convolution weights plus ``bn_per_channel`` BatchNorm parameters per output channel."""
    convs, _ = i3d_convs(width)
    return sum(i * o * k for i, o, k in convs) + bn_per_channel * sum(o for _, o, _ in convs)


#: The spatial stride of each decoder stage's skip, for a decoder that stops at a tone grid.
SKIP_STRIDE = {"Mixed_4f": 16, "Mixed_3c": 8, "Conv3d_2c_3x3": 4, "Conv3d_1a_7x7": 2, "input": 1}


def decoder_parameters(encoder_width: float, decoder_width: float, n_layers: int, tone_grid: int = 0) -> int:
    """Per stage: a transposed convolution (kernel = ratio) + BN, a 1x1x1 lateral projection of the skip
    + BN (not of the raw input), a 3x3x3 fusion of the concatenation + BN; then a 1x1x1 head with bias to
    ``3n`` channels, or, with a tone grid, stages down to the grid's stride and a head to ``6n`` (a gain and
    an offset per colour channel)."""
    _, prev = i3d_convs(encoder_width)
    total = 0
    stages = [s for s in DECODER if SKIP_STRIDE[s[0]] >= (tone_grid or 1)]
    for name, skip, width, ratio in stages:
        c = scaled(width, decoder_width)
        total += prev * c * prod(ratio) + 2 * c
        if name == "input":
            total += (c + 3) * c * 27 + 2 * c
        else:
            skip_c = scaled(skip, encoder_width)
            total += skip_c * c + 2 * c + 2 * c * c * 27 + 2 * c
        prev = c
    out = (6 if tone_grid else 3) * n_layers
    return total + prev * out + out


def conv_flops_by_hooks(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Forward FLOPs of every convolution of ``model`` on ``x``, by module name: ``2 * Cin * Cout * k^3`` per
    output voxel (per input voxel for a transposed convolution), read from the shapes seen at run time."""
    from centrifuge.model import Unit3D

    flops: dict[str, int] = {}

    def hook(name: str):
        def record(module, inputs, output):
            conv = module.conv3d if isinstance(module, Unit3D) else module
            k = prod(conv.kernel_size)
            cin, cout = conv.in_channels // conv.groups, conv.out_channels
            grid = inputs[0].shape[2:] if isinstance(conv, nn.ConvTranspose3d) else output.shape[2:]
            flops[name] = 2 * cin * cout * k * prod(grid) * output.shape[0]
        return record

    handles = []
    for name, m in model.named_modules():
        # Unit3D runs its weights through F.conv3d (its inner Conv3d is never called as a module)
        if isinstance(m, (Unit3D, nn.ConvTranspose3d)) or (isinstance(m, nn.Conv3d) and not name.endswith("conv3d")):
            handles.append(m.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return flops
