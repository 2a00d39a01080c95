"""Kernels for the decoder's thin full-resolution layers, in the channels-last layout.

The decoder's last stage works on the whole clip with 4-8 channels (``cpu-small``: ``[8, 4, 16, 96, 96]``),
and its head writes ``3n`` channels there. These layers are a few percent of the FLOPs, but PyTorch's CPU
kernels handle them badly in the channels-last layout that the convolutions need: its BatchNorm vectorises
over channels (4 of 16 lanes busy), and a 1x1x1 convolution's channels-last output makes every later pass
over the ``[B, n, 3, T, H, W]`` layers (the residual add, the loss, their backward) a strided one. On a
2-core CPU they took about half of a ``cpu-small`` training step (docs/performance.md). The two functions
here compute the same thing in a layout that suits it; they differ from the stock operators in rounding
only (``tests/test_thin_layers.py``). The BatchNorm path runs only while autograd records (training; inference
folds BatchNorm away), on CPUs, fp32/fp64 and eager mode (Inductor fuses BatchNorm itself); the head's path runs
wherever the features are channels-last and autocast is off, in training and for a network's final layers at
inference, which then leave the network in the standard layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["batch_norm_relu", "pointwise_conv"]

#: Row length of the ``[M, 64]`` views below: four 16-lane fp32 vectors, long enough for PyTorch's
#: element-wise loops (which run along a row) and a multiple of every thin channel count.
_LANES = 64

#: The widest layer that takes the thin path: from 16 channels on, PyTorch's own kernel is faster (at 8,
#: its backward is 2.4x slower, its forward 1.6x faster).
_MAX_CHANNELS = 8


def _channels_last(x: Tensor) -> bool:
    return x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()


def _lane_view(x: Tensor) -> Tensor:
    """A channels-last ``[N, C, T, H, W]`` as rows of ``_LANES`` values: column ``j`` holds channel ``j % C``."""
    return x.permute(0, 2, 3, 4, 1).reshape(-1, _LANES)


def _per_channel(lanes: Tensor, c: int) -> Tensor:
    """Sum per-column values into their ``c`` channels."""
    return lanes.view(-1, c).sum(0)


def _to_lanes(v: Tensor) -> Tensor:
    return v.repeat(_LANES // v.numel())


class _BatchNormReLU(torch.autograd.Function):
    """Training-mode BatchNorm followed by ReLU on channels-last data whose channel count divides ``_LANES``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor | None,  # noqa: ANN001
                running_var: Tensor | None, momentum: float, eps: float) -> Tensor:
        c = x.shape[1]
        x2 = _lane_view(x)
        n = x2.numel() // c
        # Two passes (the mean, then the centred squares) rather than torch.var_mean: its column-wise Welford
        # reduction is 3x slower here, and one pass over sums of squares would lose digits to cancellation.
        mean = _per_channel(x2.sum(0), c) / n
        centred = x2 - _to_lanes(mean)
        var = _per_channel((centred * centred).sum(0), c) / n
        invstd = torch.rsqrt(var + eps)
        y = torch.addcmul(_to_lanes(bias), centred, _to_lanes(weight * invstd)).clamp_min_(0)
        if running_mean is not None and running_var is not None:
            with torch.no_grad():
                running_mean.lerp_(mean, momentum)
                running_var.lerp_(var * (n / max(n - 1, 1)), momentum)
        # The centred input rather than the input: the same memory (nothing else keeps the input), and the
        # backward needs it centred.
        ctx.save_for_backward(centred, y, weight, invstd)
        ctx.shape = x.shape
        return y.view(x.shape[0], *x.shape[2:], c).permute(0, 4, 1, 2, 3)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # noqa: ANN001, ANN205
        centred, y, weight, invstd = ctx.saved_tensors
        shape = ctx.shape
        c = shape[1]
        n = centred.numel() // c
        # ReLU's own backward kernel: 6x faster here than torch.where(y > 0, ...) with its boolean mask.
        g = torch.ops.aten.threshold_backward(
            _lane_view(grad_out.contiguous(memory_format=torch.channels_last_3d)), y, 0)
        sum_g = _per_channel(g.sum(0), c)  # d loss / d bias
        sum_g_xhat = invstd * _per_channel((g * centred).sum(0), c)  # d loss / d weight
        scale = weight * invstd
        # d x = scale * (g - (sum_g + xhat * sum_g_xhat) / n), with xhat = centred * invstd
        grad_x = torch.addcmul(_to_lanes(-scale * sum_g / n), centred, _to_lanes(-scale * invstd * sum_g_xhat / n))
        grad_x = grad_x.addcmul_(g, _to_lanes(scale)).view(shape[0], *shape[2:], c).permute(0, 4, 1, 2, 3)
        return grad_x, sum_g_xhat, sum_g, None, None, None, None


def _takes_thin_path(bn: nn.Module, x: Tensor) -> bool:
    c = x.shape[1] if x.dim() == 5 else 0
    return (isinstance(bn, nn.BatchNorm3d) and bn.training and bn.affine and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64) and 0 < c <= _MAX_CHANNELS and _LANES % c == 0
            and x.numel() % _LANES == 0 and _channels_last(x) and torch.is_grad_enabled()
            and not torch.compiler.is_compiling())  # Inductor fuses BatchNorm itself


def batch_norm_relu(bn: nn.Module, x: Tensor) -> Tensor:
    """``relu(bn(x))`` (``bn``: a BatchNorm3d, or what inference folded it into). In training, on channels-last
    CPU data with at most 8 channels, it works on rows of 64 values (a few channels each) instead of PyTorch's
    channel-vectorised kernel: 2-3x faster there (docs/performance.md); running statistics and
    ``num_batches_tracked`` are updated as ``bn`` does."""
    if not _takes_thin_path(bn, x):
        return F.relu(bn(x), inplace=True)
    assert isinstance(bn, nn.BatchNorm3d)
    tracking = bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if tracking and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # a cumulative average, as BatchNorm's momentum=None
            momentum = 1.0 / float(bn.num_batches_tracked)
    return _BatchNormReLU.apply(x, bn.weight, bn.bias, bn.running_mean if tracking else None,
                                bn.running_var if tracking else None, momentum, bn.eps)


def _tiled_identity(out_channels: int, channels: int, like: Tensor) -> Tensor:
    """``[out_channels, channels]`` with a 1 where ``o % channels == c``: adds the input to every group."""
    o = torch.arange(out_channels, device=like.device)[:, None]
    return (o % channels == torch.arange(channels, device=like.device)).to(like.dtype)


def pointwise_conv(conv: nn.Conv3d, x: Tensor, residual: Tensor | None = None,
                   out_dtype: torch.dtype | None = None) -> Tensor:
    """``conv(x)`` for a 1x1x1 ``conv``, plus ``residual`` (``[B, r, T, H, W]``) added to each group of ``r``
    output channels when given. ``out_dtype`` marks the network's final layers at inference (set by
    :func:`centrifuge.inference.prepare_for_inference`): they are returned in that dtype, in the standard layout.

    Where ``x`` is channels-last, autocast is off, and autograd records (training) or ``out_dtype`` is given,
    it is one batched matrix product whose result is in the standard layout: ``[W | tiled identity | bias] @
    [x | residual | 1]`` per voxel. The stock convolution would write a channels-last result that every later
    pass over the ``[B, n, 3, T, H, W]`` layers (the loss and its backward in training; stitching, the store
    and the statistics in separation) reads with a stride of ``C_out``, and the bias and the residual would
    each be one more pass over that whole tensor (at inference, the strided residual add was the packaged
    model's slowest operator after the convolutions: docs/performance.md). At inference the product runs in
    ``out_dtype``: a bf16 network's layers are computed in float32 from its bf16 features, rounded once
    instead of three times (convolution, residual add, conversion) and written once. Other heads at
    inference (a PredictorCorrector's intermediate layers, which its corrector's convolutions read) keep the
    stock channels-last convolution.
    """
    # Not under autocast: the matrix product would run in bf16 and round the residual with it.
    fast = (_channels_last(x) and (torch.is_grad_enabled() or out_dtype is not None)
            and not torch.is_autocast_enabled(x.device.type)
            and conv.groups == 1 and conv.kernel_size == (1, 1, 1) and conv.stride == (1, 1, 1)
            and (residual is None or residual.shape[2:] == x.shape[2:]))
    if not fast:
        out = conv(x)
        if residual is not None:
            r = residual.shape[1]
            out = (out.unflatten(1, (-1, r)) + residual[:, None]).flatten(1, 2)
        # Under autocast the sum's dtype is the promotion of the convolution's and the residual's: keep it.
        return out if out_dtype is None else out.to(out_dtype)
    dtype = out_dtype or x.dtype
    b, c, t, h, w = x.shape
    weights, inputs = [conv.weight.view(-1, c)], [x]
    if residual is not None:
        weights.append(_tiled_identity(weights[0].shape[0], residual.shape[1], x))
        inputs.append(residual.to(x.dtype))
    if conv.bias is not None:
        weights.append(conv.bias.view(-1, 1))
        # Channels-last strides even for one channel: torch.cat gives channels-last only if every input has
        # them, and new_ones' standard strides would cost a copy of the whole concatenation below.
        ones = torch.empty(b, 1, t, h, w, dtype=x.dtype, device=x.device, memory_format=torch.channels_last_3d)
        inputs.append(ones.fill_(1))
    # Concatenating channels-last tensors on channels gives channels-last: ``rows`` is a view of it (the
    # ``contiguous`` only copies a residual in another layout; ``to`` converts these few channels at most).
    stacked = torch.cat(inputs, dim=1).contiguous(memory_format=torch.channels_last_3d).to(dtype)
    rows = stacked.permute(0, 2, 3, 4, 1).reshape(b, t * h * w, -1)
    matrix = torch.cat(weights, dim=1).to(dtype)
    out = torch.bmm(matrix.expand(b, -1, -1), rows.transpose(1, 2))
    return out.view(b, -1, t, h, w)
