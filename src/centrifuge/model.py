"""Sec. 3.2 / Appendix A: the predictor (I3D encoder + U-Net decoder) and the predictor-corrector.

Encoder
    I3D (Carreira & Zisserman 2017) as in DeepMind's ``kinetics-i3d``: an ordered list of named endpoints,
    built up to ``final_endpoint`` (the classifier is never built). Convolutions and max-pools use
    TensorFlow "SAME" padding computed from the input size, so any ``T, H, W`` works and an input that is
    a multiple of an endpoint's stride gives exactly ``size / stride`` there. ``width`` scales every channel
    count (``max(4, round(c * width))``) for small presets; ``width=1`` is I3D.

Decoder (our reading of Fig. 10, which the paper gives only as an image)
    Starting from the final endpoint, one stage per skip endpoint below it, deepest first
    (``Mixed_4f``, ``Mixed_3c``, ``Conv3d_2c_3x3``, ``Conv3d_1a_7x7``, then the input video itself)::

        up    = ReLU(BN(ConvTranspose3d(y, kernel=stride=ratio)))   # ratio = stride(prev) / stride(skip)
        skip' = ReLU(BN(Conv1x1x1(skip)))                           # not for the input video (raw pixels)
        y     = ReLU(BN(Conv3x3x3(concat(up, skip'))))             # "SAME", stride 1

    and a plain ``Conv3d`` 1x1x1 with bias (no BN/ReLU) maps the full-resolution features to ``3n``
    channels. Choices, and why:

    * ``kernel = stride`` transposed convolutions: no overlap, so no checkerboard artefacts and no padding
      arithmetic, and as cheap as a 1x1x1 convolution at the output resolution; the 3x3x3 fusion right
      after provides the spatial/temporal mixing.
    * The 1x1x1 "lateral" projection of the skip: I3D's skips are wide (832, 480, 192 channels) and
      concatenating them raw would make the 3x3x3 fusions the dominant cost (22.7 instead of 10.1 decoder
      GFLOPs below). Projecting to the stage width first keeps each fusion at ``2C -> C``.
    * Stage widths (``DECODER_CHANNELS``) halve while the resolution grows 4-8x, so every stage costs
      about the same (1.5-3.2 GFLOPs below): 256 / 64 / 32 / 16 / 8 at ``width=1``. Wider stages, e.g.
      256 / 128 / 96 / 64 / 32, would cost 72 GFLOPs, 2.6x the encoder. The last stage is thin (8 channels
      at full resolution) but sees the raw input pixels, which is what fine detail needs.
    * An upsampled map larger than its skip (the input is not a multiple of the stride) is cropped at the
      end, where "SAME" padding put the extra cells, so no input padding is needed.

    Cost of ``Predictor(n_layers=4)``, ``width=1``, input ``1x3x32x112x112``, forward, counted with
    ``torch.utils.flop_counter.FlopCounterMode`` (1 multiply-add = 2 FLOPs): encoder 27.93 GFLOPs,
    decoder 10.11 GFLOPs; parameters: encoder 12.29 M, decoder 6.32 M.

    ``decoder_width`` (default: ``width``) scales the decoder alone. At the small presets' ``width=0.25``
    the two full-resolution stages would have only ``max(4, 16 * 0.25) = 4`` channels to carry ``3n``
    output channels of detail; ``decoder_width=0.5`` gives them 8 for about 7% more time per training step.

Predictor
    ``[B, C_in, T, H, W]`` in [-1, 1] -> ``[B, n, 3, T, H, W]``, any ``T, H, W``. By default (the paper's
    presets) the decoder's output is the prediction itself, not a residual on the input: the paper's
    untrained predictor (loss 0.561) is worse than the identity baseline (0.361), so it does not start from
    the input. The last convolution is initialised near zero, so an untrained model outputs grey.
    ``residual=True`` makes each layer the input plus the decoder's output, ``O_i = V + D_i``: an untrained
    model is then the identity baseline, and the decoder has to carry only what differs between the blend
    and a layer, while the blend's own detail comes through unchanged.

    ``tone_grid=s`` (a power of two from 2 to 16) replaces that head by a coarse one: the decoder stops at the
    stage of spatial stride ``s`` and writes, per layer, a gain and an offset per colour channel on that grid;
    upsampled (trilinear) to the input's size they re-tone the input, ``O_i = (1 + G_i) * V + B_i``. This is a
    local tone map of the blend, as in HDRNet's bilateral grid or the deep guided filter, aimed at what the
    block tone oracle measures (docs/results.md): per block, a layer can keep the blend's texture (one scene
    owns it there) or flatten it, but cannot hedge by writing half of every edge at full resolution, and the
    decoder's full-resolution stages are not run.

    ``tone_curve=True`` adds a quadratic term per colour channel to that map, ``O_i = (1 + G_i) * V + B_i + Q_i * V²``:
    per block a tone *curve* instead of a line, so a layer can keep the blend's bright strokes and flatten its dark
    ones (or the reverse): a step from a gain towards the curves of HDRNet's bilateral grid, for one more
    coefficient per channel.

Predictor-corrector
    A predictor gives ``Õ``; each corrector (own weights) sees the stacked layers ``[B, 3n, T, H, W]`` and
    adds ``Δ``: ``O = Õ + Δ``. ``corrector_steps=1`` is the paper; more steps repeat the correction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .thin_layers import batch_norm_relu, pointwise_conv

__all__ = [
    "VALID_ENDPOINTS",
    "SKIP_ENDPOINTS",
    "DECODER_CHANNELS",
    "Unit3D",
    "MaxPool3dSame",
    "InceptionBlock",
    "I3DEncoder",
    "UNetDecoder",
    "Predictor",
    "PredictorCorrector",
    "ModelConfig",
    "build_model",
    "conv_depth",
    "scale_channels",
]

Triple = tuple[int, int, int]

#: I3D endpoints in network order (``kinetics-i3d``), without the classifier (``Logits``/``Predictions``).
VALID_ENDPOINTS: tuple[str, ...] = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
)

#: Endpoints the U-Net decoder takes skips from: the last endpoint at each encoder stride.
SKIP_ENDPOINTS: tuple[str, ...] = ("Conv3d_1a_7x7", "Conv3d_2c_3x3", "Mixed_3c", "Mixed_4f")

#: Decoder stage widths at ``width=1``, keyed by the skip each stage merges (``"input"``: the video).
DECODER_CHANNELS: dict[str, int] = {
    "Mixed_4f": 256,
    "Mixed_3c": 64,
    "Conv3d_2c_3x3": 32,
    "Conv3d_1a_7x7": 16,
    "input": 8,
}

# TF I3D uses eps 1e-3. PyTorch's default momentum (0.1) rather than TF's 0.999 decay: running
# statistics settle within tens of steps, which matters for short runs and small presets.
BN_EPS = 1e-3
BN_MOMENTUM = 0.1


def _triple(v: int | Sequence[int]) -> Triple:
    if isinstance(v, int):
        return (v, v, v)
    t = tuple(int(i) for i in v)
    if len(t) != 3:
        raise ValueError(f"expected an int or 3 ints, got {v!r}")
    return t  # type: ignore[return-value]


def scale_channels(c: int, width: float) -> int:
    """Channel count ``c`` scaled by ``width``, at least 4."""
    return max(4, int(round(c * width)))


def _same_pads(size: Sequence[int], kernel: Triple, stride: Triple) -> list[tuple[int, int]]:
    """TensorFlow "SAME" padding (before, after) per dimension; the extra pixel goes after, as in TF."""
    pads = []
    for n, k, s in zip(size, kernel, stride, strict=True):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _flat_pad(pads: Sequence[tuple[int, int]]) -> list[int]:
    # F.pad wants the last dimension first.
    return [p for pair in reversed(pads) for p in pair]


def _cpu_bf16(x: Tensor) -> bool:
    return x.device.type == "cpu" and (x.dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu"))


class Unit3D(nn.Module):
    """Conv3d (no bias) + BatchNorm3d + ReLU with TF "SAME" padding, as ``Unit3D`` in ``kinetics-i3d``."""

    def __init__(
        self,
        in_channels: int,
        output_channels: int,
        kernel_shape: int | Sequence[int] = 1,
        stride: int | Sequence[int] = 1,
        use_batch_norm: bool = True,
        activation: bool = True,
        use_bias: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = output_channels
        self.kernel_shape = _triple(kernel_shape)
        self.stride = _triple(stride)
        self.conv3d = nn.Conv3d(in_channels, output_channels, self.kernel_shape, self.stride, bias=use_bias)
        self.bn = (nn.BatchNorm3d(output_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
                   if use_batch_norm else None)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        pads = _same_pads(x.shape[-3:], self.kernel_shape, self.stride)
        w, b = self.conv3d.weight, self.conv3d.bias
        if x.shape[-3] == 1 and self.kernel_shape[0] > 1 and _cpu_bf16(x):
            # oneDNN's bf16 kernel returns NaN for one frame with temporal padding (seen on AMX CPUs); the
            # padding leaves one temporal tap on that frame, so convolving with that tap alone is the same sum.
            tap = pads[0][0]
            w, pads = w[:, :, tap:tap + 1], [(0, 0), *pads[1:]]
        if all(lo == hi for lo, hi in pads):
            # Symmetric: let the convolution pad (no extra copy of the input).
            x = F.conv3d(x, w, b, self.stride, tuple(lo for lo, _ in pads))
        else:
            x = F.conv3d(F.pad(x, _flat_pad(pads)), w, b, self.stride)
        if self.bn is not None and self.activation:
            return batch_norm_relu(self.bn, x)
        if self.bn is not None:
            x = self.bn(x)
        if self.activation:
            x = F.relu(x, inplace=True)
        return x


class MaxPool3dSame(nn.Module):
    """Max-pooling with TF "SAME" padding; padded positions never win (they are -inf)."""

    def __init__(self, kernel_shape: int | Sequence[int], stride: int | Sequence[int]) -> None:
        super().__init__()
        self.kernel_shape = _triple(kernel_shape)
        self.stride = _triple(stride)

    def forward(self, x: Tensor) -> Tensor:
        pads = _same_pads(x.shape[-3:], self.kernel_shape, self.stride)
        if all(lo == hi for lo, hi in pads):
            # max_pool3d pads with -inf itself; SAME never needs more than kernel // 2 per side.
            return F.max_pool3d(x, self.kernel_shape, self.stride, tuple(lo for lo, _ in pads))
        x = F.pad(x, _flat_pad(pads), value=float("-inf"))
        return F.max_pool3d(x, self.kernel_shape, self.stride)


class InceptionBlock(nn.Module):
    """I3D's ``Mixed_*`` block: four parallel branches, concatenated on channels.

    ``channels = [b0, b1a, b1b, b2a, b2b, b3]``: 1x1 (b0); 1x1 (b1a) -> 3x3x3 (b1b); 1x1 (b2a) -> 3x3x3
    (b2b); 3x3x3 max-pool (stride 1) -> 1x1 (b3).
    """

    stride: Triple = (1, 1, 1)

    def __init__(self, in_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        if len(channels) != 6:
            raise ValueError(f"an inception block needs 6 channel counts, got {list(channels)}")
        c0, c1a, c1b, c2a, c2b, c3 = channels
        self.in_channels = in_channels
        self.out_channels = c0 + c1b + c2b + c3
        self.branch_0 = Unit3D(in_channels, c0, 1)
        self.branch_1 = nn.Sequential(Unit3D(in_channels, c1a, 1), Unit3D(c1a, c1b, 3))
        self.branch_2 = nn.Sequential(Unit3D(in_channels, c2a, 1), Unit3D(c2a, c2b, 3))
        self.branch_3 = nn.Sequential(MaxPool3dSame(3, 1), Unit3D(in_channels, c3, 1))

    @property
    def branches(self) -> tuple[nn.Module, ...]:
        return (self.branch_0, self.branch_1, self.branch_2, self.branch_3)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


# (kind, args) per endpoint at width 1; kinds: conv (channels, kernel, stride), pool (kernel, stride),
# mixed (6 channel counts).
_I3D_SPEC: dict[str, tuple[str, tuple[Any, ...]]] = {
    "Conv3d_1a_7x7": ("conv", (64, 7, 2)),
    "MaxPool3d_2a_3x3": ("pool", ((1, 3, 3), (1, 2, 2))),
    "Conv3d_2b_1x1": ("conv", (64, 1, 1)),
    "Conv3d_2c_3x3": ("conv", (192, 3, 1)),
    "MaxPool3d_3a_3x3": ("pool", ((1, 3, 3), (1, 2, 2))),
    "Mixed_3b": ("mixed", (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": ("mixed", (128, 128, 192, 32, 96, 64)),
    "MaxPool3d_4a_3x3": ("pool", (3, 2)),
    "Mixed_4b": ("mixed", (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": ("mixed", (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": ("mixed", (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": ("mixed", (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": ("mixed", (256, 160, 320, 32, 128, 128)),
    "MaxPool3d_5a_2x2": ("pool", (2, 2)),
    "Mixed_5b": ("mixed", (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": ("mixed", (384, 192, 384, 48, 128, 128)),
}
assert tuple(_I3D_SPEC) == VALID_ENDPOINTS


def _init_weights(module: nn.Module) -> None:
    # Every convolution here is followed by BatchNorm, so only the shape of the init matters.
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class I3DEncoder(nn.Module):
    """I3D up to ``final_endpoint``.

    Attributes:
        endpoints: ``nn.ModuleDict`` of the built endpoints, in network order.
        channels: output channels of every built endpoint (and ``"input"``).
        strides: ``(t, h, w)`` stride of every built endpoint relative to the input (and ``"input"``).
        output_endpoints: the endpoints ``forward`` returns: the skip endpoints that exist below
            ``final_endpoint``, then ``final_endpoint``.
    """

    def __init__(self, in_channels: int = 3, width: float = 1.0, final_endpoint: str = "Mixed_5c") -> None:
        super().__init__()
        if final_endpoint not in VALID_ENDPOINTS:
            raise ValueError(f"unknown final_endpoint {final_endpoint!r}; choose from {VALID_ENDPOINTS}")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.in_channels = in_channels
        self.width = width
        self.final_endpoint = final_endpoint
        self.endpoints = nn.ModuleDict()
        self.channels: dict[str, int] = {"input": in_channels}
        self.strides: dict[str, Triple] = {"input": (1, 1, 1)}
        c, stride = in_channels, (1, 1, 1)
        for name in VALID_ENDPOINTS:
            kind, args = _I3D_SPEC[name]
            block: nn.Module
            if kind == "conv":
                out, k, s = args
                block = Unit3D(c, scale_channels(out, width), k, s)
            elif kind == "pool":
                block = MaxPool3dSame(*args)
            else:
                block = InceptionBlock(c, [scale_channels(x, width) for x in args])
            self.endpoints[name] = block
            c = getattr(block, "out_channels", c)  # pools keep the channel count
            stride = tuple(a * b for a, b in zip(stride, block.stride, strict=True))  # type: ignore[assignment]
            self.channels[name] = c
            self.strides[name] = stride
            if name == final_endpoint:
                break
        self.out_channels = c
        built = list(self.endpoints)
        self.output_endpoints: tuple[str, ...] = tuple(
            e for e in built if e in SKIP_ENDPOINTS and e != final_endpoint
        ) + (final_endpoint,)
        _init_weights(self)

    @property
    def total_stride(self) -> Triple:
        """``(t, h, w)`` stride of ``final_endpoint``: inputs that are multiples of it line up exactly."""
        return self.strides[self.final_endpoint]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``x``: ``[B, C, T, H, W]`` -> ``{endpoint: features}`` for ``output_endpoints``."""
        out: dict[str, Tensor] = {}
        for name, block in self.endpoints.items():
            x = block(x)
            if name in self.output_endpoints:
                out[name] = x
        return out


def conv_depth(module: nn.Module) -> int:
    """Number of convolution layers on the longest path through ``module``, counted from its modules.

    ``Unit3D`` counts 1, pooling 0, an ``InceptionBlock`` the deepest of its branches, and any other
    container the sum of its children (they run one after the other, as the encoder's endpoints do). A
    ``Predictor`` is measured by its encoder (the paper's Table 4: 7 / 17 / 21 for Mixed_3c / 4f / 5c).
    """
    if isinstance(module, Unit3D):
        return 1
    if isinstance(module, InceptionBlock):
        return max(conv_depth(b) for b in module.branches)
    if isinstance(module, Predictor):
        return conv_depth(module.encoder)
    return sum(conv_depth(m) for m in module.children())


class _UpUnit3D(nn.Module):
    """ConvTranspose3d with ``kernel = stride`` (no overlap, exact ``size * stride``) + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, scale: Triple) -> None:
        super().__init__()
        self.scale = scale
        self.conv3d = nn.ConvTranspose3d(in_channels, out_channels, scale, scale, bias=False)
        self.bn = nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: Tensor) -> Tensor:
        return batch_norm_relu(self.bn, self.conv3d(x))


class _DecoderStage(nn.Module):
    """Upsample, merge one skip (1x1x1-projected unless ``lateral=False``), fuse with a 3x3x3 Unit3D."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, scale: Triple,
                 lateral: bool = True) -> None:
        super().__init__()
        self.up = _UpUnit3D(in_channels, out_channels, scale)
        self.lateral = Unit3D(skip_channels, out_channels, 1) if lateral else None
        merged = out_channels + (out_channels if lateral else skip_channels)
        self.fuse = Unit3D(merged, out_channels, 3)
        self.out_channels = out_channels

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        t, h, w = skip.shape[-3:]
        if x.shape[-3:] != skip.shape[-3:]:
            # "SAME" gives ceil(n / s) everywhere, so the upsampled grid is the skip's plus cells that came
            # from padding, which TF "SAME" puts at the end: drop those.
            x = x[:, :, :t, :h, :w]
        if self.lateral is not None:
            skip = self.lateral(skip)
        return self.fuse(torch.cat([x, skip], dim=1))


class UNetDecoder(nn.Module):
    """U-Net decoder over an :class:`I3DEncoder` (see the module docstring for the design).

    Args:
        encoder: the encoder whose endpoints it consumes (only its channel/stride tables are read; it is
            not registered as a submodule).
        out_channels: channels of the output (``3n`` layers, or ``6n`` coefficients for a tone grid).
        width: multiplies ``DECODER_CHANNELS`` (at least 4 channels per stage).
        stop_stride: the last stage is the one whose skip has this spatial stride (1: the input, full
            resolution); the output is then on that stage's grid.
    """

    def __init__(self, encoder: I3DEncoder, out_channels: int, width: float = 1.0, stop_stride: int = 1) -> None:
        super().__init__()
        self.final_endpoint = encoder.final_endpoint
        skips = [e for e in reversed(encoder.output_endpoints) if e != encoder.final_endpoint] + ["input"]
        skips = [e for e in skips if encoder.strides[e][-1] >= stop_stride]
        self.stages = nn.ModuleDict()
        c, stride = encoder.channels[self.final_endpoint], encoder.strides[self.final_endpoint]
        for name in skips:
            skip_stride = encoder.strides[name]
            scale = tuple(a // b for a, b in zip(stride, skip_stride, strict=True))
            stage = _DecoderStage(c, encoder.channels[name], scale_channels(DECODER_CHANNELS[name], width),
                                  scale, lateral=name != "input")  # type: ignore[arg-type]
            self.stages[name] = stage
            c, stride = stage.out_channels, skip_stride
        self.head = nn.Conv3d(c, out_channels, 1, bias=True)
        self.out_channels = out_channels
        #: The output's dtype (None: the features'). prepare_for_inference sets float32 on the decoder that writes
        #: the final layers: its head then writes them in the standard layout (thin_layers.pointwise_conv).
        self.out_dtype: torch.dtype | None = None
        _init_weights(self)
        # Start near zero (grey): the first updates then shape the output instead of fighting noise.
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)

    def forward(self, endpoints: Mapping[str, Tensor], x: Tensor, residual: Tensor | None = None) -> Tensor:
        """``endpoints``: the encoder's output; ``x``: its input. Returns ``[B, out_channels, T, H, W]``, with
        ``residual`` (``[B, r, T, H, W]``) added to each group of ``r`` output channels when given."""
        y = endpoints[self.final_endpoint]
        for name, stage in self.stages.items():
            y = stage(y, x if name == "input" else endpoints[name])
        return pointwise_conv(self.head, y, residual, self.out_dtype)


class Predictor(nn.Module):
    """Encoder-decoder: ``[B, in_channels, T, H, W]`` -> ``n_layers`` videos ``[B, n, 3, T, H, W]``.

    Fully convolutional: any ``T, H, W``. By default the decoder crops each upsampled map to its skip;
    ``pad_input=True`` instead replicate-pads the input to a multiple of the encoder's total stride and
    crops the output (symmetric borders, but e.g. +31% FLOPs at 112x112, which is not a multiple of 32).
    """

    def __init__(self, n_layers: int = 2, in_channels: int = 3, width: float = 1.0,
                 final_endpoint: str = "Mixed_5c", pad_input: bool = False,
                 decoder_width: float | None = None, residual: bool = False, tone_grid: int = 0,
                 tone_curve: bool = False) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if (residual or tone_grid) and in_channels != 3:
            raise ValueError("residual=True and tone_grid need a 3-channel input (each layer is made from it)")
        self.n_layers = n_layers
        self.in_channels = in_channels
        self.pad_input = pad_input
        self.residual = residual
        self.tone_grid = tone_grid
        if tone_curve and not tone_grid:
            raise ValueError("tone_curve needs a tone_grid (it adds a quadratic term to the grid's tone map)")
        self.tone_curve = tone_curve
        self.encoder = I3DEncoder(in_channels, width, final_endpoint)
        grids = {self.encoder.strides[e][-1] for e in self.encoder.output_endpoints[:-1]}
        if tone_grid and tone_grid not in grids:
            raise ValueError(f"tone_grid must be 0 or one of {sorted(grids)} (a decoder stage's stride below "
                             f"{final_endpoint}), got {tone_grid}")
        channels = (3 * self._tone_terms if tone_grid else 3) * n_layers
        self.decoder = UNetDecoder(self.encoder, channels, width if decoder_width is None else decoder_width,
                                   stop_stride=tone_grid or 1)

    @property
    def _tone_terms(self) -> int:
        """Coefficients per colour channel and layer of the tone map: gain, offset (and the quadratic term)."""
        return 3 if self.tone_curve else 2

    def _input_pads(self, size: Sequence[int]) -> list[tuple[int, int]]:
        pads = []
        for n, m in zip(size, self.encoder.total_stride, strict=True):
            total = -n % m
            pads.append((total // 2, total - total // 2))
        return pads

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[B, in_channels, T, H, W]`` in [-1, 1]. Returns ``[B, n_layers, 3, T, H, W]``."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected [B, {self.in_channels}, T, H, W], got {tuple(x.shape)}")
        size = x.shape[-3:]
        pads = self._input_pads(size) if self.pad_input else [(0, 0)] * 3
        if any(lo or hi for lo, hi in pads):
            # Replicate rather than zeros: a constant border would look like an extra layer edge.
            x = F.pad(x, _flat_pad(pads), mode="replicate")
        # The decoder's head adds the residual itself, in the same pass over the layers. A padded input is
        # cropped with the output below, which leaves the original input there.
        if self.tone_grid:
            y = self._retone(x, self.decoder(self.encoder(x), x))
        else:
            y = self.decoder(self.encoder(x), x, x if self.residual else None)
        (t0, _), (h0, _), (w0, _) = pads
        y = y[:, :, t0:t0 + size[0], h0:h0 + size[1], w0:w0 + size[2]]
        return y.unflatten(1, (self.n_layers, 3))  # a view, also for channels_last_3d

    def _retone(self, x: Tensor, grid: Tensor) -> Tensor:
        """``grid``: ``[B, 6n, t, h, w]`` gains then offsets per layer and channel (``[B, 9n, ...]``: then the
        quadratic terms, with ``tone_curve``) -> ``[B, 3n, T, H, W]``.

        Computed in float32: the coefficients multiply every pixel, where bf16's 8 bits of mantissa would show
        as banding. Returned as the residual head returns its layers: in the promotion of the coefficients' and
        the input's dtypes (float32 under autocast, the network's dtype in a cast network, whose corrector reads
        them; float32 where the decoder is marked to write the final layers so).
        """
        dtype = torch.promote_types(grid.dtype, x.dtype)
        # (the meta device, where FLOPs are counted, has no autocast to turn off)
        no_autocast = torch.autocast(x.device.type, enabled=False) if x.device.type != "meta" else nullcontext()
        with no_autocast:
            grid = grid.float()
            if torch.compiler.is_compiling():  # export and compile: one Resize, sizes left symbolic
                grid = F.interpolate(grid, size=x.shape[-3:], mode="trilinear", align_corners=False)
            else:
                grid = upsample_linear(grid, x.shape[-3:])
            coefficients = grid.unflatten(1, (self.n_layers, self._tone_terms, 3)).unbind(2)
            x = x.float()[:, None]
            y = torch.addcmul(coefficients[1], x, 1 + coefficients[0])
            if self.tone_curve:
                y = torch.addcmul(y, x * x, coefficients[2])
            return y.flatten(1, 2).to(dtype)


def _linear_weights(n_out: int, n_in: int, like: Tensor) -> Tensor:
    """``[n_out, n_in]``: ``F.interpolate``'s linear weights (``align_corners=False``) from ``n_in`` samples to
    ``n_out``, in ``like``'s dtype and on its device; found by interpolating the identity, on the CPU in float64
    (which not every accelerator has)."""
    eye = torch.eye(n_in, dtype=torch.float64)[:, None, :]
    weights = F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0, :].T
    return weights.to(like.device, like.dtype)


def upsample_linear(x: Tensor, size: Sequence[int]) -> Tensor:
    """``F.interpolate(x, size, mode="trilinear")`` for ``[B, C, t, h, w]``, as three small matrix products.

    Time first, while the frame is still coarse, then width, then height: CPU's trilinear kernel and its
    backward were a quarter of a tone-grid model's training step; these products cost a fraction of that.
    """
    (t, h, w), (ts, hs, ws) = x.shape[-3:], size
    ut, uh, uw = (_linear_weights(o, i, x) for o, i in ((ts, t), (hs, h), (ws, w)))
    x = torch.einsum("Tt,bcthw->bcThw", ut, x)
    return uh @ (x @ uw.T)


class PredictorCorrector(nn.Module):
    """A predictor followed by ``corrector_steps`` correctors (Sec. 3.2, Fig. 9): ``O = Õ + Δ``.

    Each corrector is a :class:`Predictor` with its own weights taking the ``3n``-channel stack of the
    current layers and predicting a correction of the same shape.
    """

    def __init__(self, n_layers: int = 2, width: float = 1.0, final_endpoint: str = "Mixed_5c",
                 corrector_steps: int = 1, pad_input: bool = False, decoder_width: float | None = None,
                 residual: bool = False, tone_grid: int = 0, tone_curve: bool = False) -> None:
        super().__init__()
        if corrector_steps < 1:
            raise ValueError(f"corrector_steps must be >= 1, got {corrector_steps}")
        self.n_layers = n_layers
        self.predictor = Predictor(n_layers, 3, width, final_endpoint, pad_input, decoder_width, residual, tone_grid,
                                   tone_curve)
        self.correctors = nn.ModuleList(
            Predictor(n_layers, 3 * n_layers, width, final_endpoint, pad_input, decoder_width)
            for _ in range(corrector_steps)
        )

    @overload
    def forward(self, x: Tensor, return_all: Literal[False] = False) -> Tensor: ...

    @overload
    def forward(self, x: Tensor, return_all: Literal[True]) -> list[Tensor]: ...

    def forward(self, x: Tensor, return_all: bool = False) -> Tensor | list[Tensor]:
        """``x``: ``[B, 3, T, H, W]``. Returns the final ``[B, n, 3, T, H, W]``, or with ``return_all`` the
        list ``[Õ, O_1, ..., O_steps]``."""
        o = self.predictor(x)
        outputs = [o]
        for corrector in self.correctors:
            o = o + corrector(o.flatten(1, 2))
            outputs.append(o)
        return outputs if return_all else o


def _positive_number(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@dataclass
class ModelConfig:
    """The network: ``n_layers`` outputs, optional corrector(s), channel ``width``, I3D ``final_endpoint``."""

    n_layers: int = 2
    corrector: bool = False
    corrector_steps: int = 1
    width: float = 1.0
    final_endpoint: str = "Mixed_5c"
    decoder_width: float | None = None
    residual: bool = False
    tone_grid: int = 0  # 0: full-resolution layers; s: the predictor re-tones the input on a grid of stride s
    tone_curve: bool = False  # the grid's tone map adds a quadratic term: a curve per block, not a line

    def __post_init__(self) -> None:
        if self.n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {self.n_layers}")
        if self.corrector_steps < 1:
            raise ValueError(f"corrector_steps must be >= 1, got {self.corrector_steps}")
        if not _positive_number(self.width):
            raise ValueError(f"width must be a positive number, got {self.width!r}")
        if self.decoder_width is not None and not _positive_number(self.decoder_width):
            raise ValueError(f"decoder_width must be a positive number, got {self.decoder_width!r}")
        if self.final_endpoint not in VALID_ENDPOINTS:
            raise ValueError(f"unknown final_endpoint {self.final_endpoint!r}; choose from {VALID_ENDPOINTS}")
        if not isinstance(self.tone_grid, int) or self.tone_grid not in (0, 2, 4, 8, 16):
            raise ValueError(f"tone_grid must be 0, 2, 4, 8 or 16, got {self.tone_grid!r}")
        if self.tone_curve and not self.tone_grid:
            raise ValueError("tone_curve needs a tone_grid (it adds a quadratic term to the grid's tone map)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; missing keys take defaults, unknown keys raise ``ValueError``."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
        return cls(**values)


def build_model(cfg: ModelConfig | Mapping[str, Any]) -> nn.Module:
    """A :class:`PredictorCorrector` if ``cfg.corrector`` else a :class:`Predictor` (3-channel input)."""
    if not isinstance(cfg, ModelConfig):
        cfg = ModelConfig.from_dict(cfg)
    if cfg.corrector:
        return PredictorCorrector(cfg.n_layers, cfg.width, cfg.final_endpoint, cfg.corrector_steps,
                                  decoder_width=cfg.decoder_width, residual=cfg.residual, tone_grid=cfg.tone_grid,
                                  tone_curve=cfg.tone_curve)
    return Predictor(cfg.n_layers, 3, cfg.width, cfg.final_endpoint, decoder_width=cfg.decoder_width,
                     residual=cfg.residual, tone_grid=cfg.tone_grid, tone_curve=cfg.tone_curve)
