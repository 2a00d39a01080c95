"""The network in a form that exports with dynamic clip length and frame size (ONNX, ``torch.export``).

The model pads each convolution and pool with TensorFlow's "SAME" rule computed in Python from the input size
(``centrifuge.model._same_pads``), and the decoder crops each upsampled map to its skip when they differ. Traced
with symbolic sizes, both become guards on the sizes' remainders (``T % 2``, ``H % 32``...), and
``torch.export`` then either fixes the sizes or spends minutes in its solver. Here the three size-dependent
steps are opaque operators whose output size is a plain formula (``ceil(n / stride)``, the skip's size), and
each maps to one ONNX operator that does the same padding by itself: ``Conv`` and ``MaxPool`` with
``auto_pad="SAME_UPPER"`` (TF's rule: the extra cell at the end, padded cells never win a max) and ``Slice``
to the skip's shape. Any ``T, H, W >= 1`` then gives the eager model's result to rounding.

:func:`portable_model` returns an inference copy (BatchNorm folded) built from these operators; the operators
are registered under ``centrifuge::`` when this module is imported.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .inference import fold_batch_norm
from .model import MaxPool3dSame, Unit3D, _DecoderStage, _flat_pad, _same_pads

__all__ = ["portable_model", "onnx_translations", "conv3d_same", "max_pool3d_same", "crop_like"]


def _same_size(x: Tensor, stride: Sequence[int]) -> list:
    return [-(-n // s) for n, s in zip(x.shape[2:], stride, strict=True)]


@torch.library.custom_op("centrifuge::conv3d_same", mutates_args=())
def conv3d_same(x: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int]) -> Tensor:
    """3D convolution with TF "SAME" padding (as :class:`~centrifuge.model.Unit3D`, without BN/ReLU)."""
    pads = _same_pads(x.shape[2:], tuple(weight.shape[2:]), tuple(stride))
    return F.conv3d(F.pad(x, _flat_pad(pads)), weight, bias, stride)


@conv3d_same.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int]) -> Tensor:
    return x.new_empty((x.shape[0], weight.shape[0], *_same_size(x, stride)))


@torch.library.custom_op("centrifuge::max_pool3d_same", mutates_args=())
def max_pool3d_same(x: Tensor, kernel: list[int], stride: list[int]) -> Tensor:
    """Max-pooling with TF "SAME" padding (as :class:`~centrifuge.model.MaxPool3dSame`)."""
    pads = _same_pads(x.shape[2:], tuple(kernel), tuple(stride))
    return F.max_pool3d(F.pad(x, _flat_pad(pads), value=float("-inf")), kernel, stride)


@max_pool3d_same.register_fake
def _(x: Tensor, kernel: list[int], stride: list[int]) -> Tensor:
    return x.new_empty((*x.shape[:2], *_same_size(x, stride)))


@torch.library.custom_op("centrifuge::crop_like", mutates_args=())
def crop_like(x: Tensor, like: Tensor) -> Tensor:
    """``x`` cut to ``like``'s ``T, H, W`` from the start (the decoder's crop of "SAME" padding cells)."""
    t, h, w = like.shape[2:]
    return x[:, :, :t, :h, :w].clone()


@crop_like.register_fake
def _(x: Tensor, like: Tensor) -> Tensor:
    return x.new_empty((*x.shape[:2], *like.shape[2:]))


class _SameConv(nn.Module):
    """A BN-folded :class:`~centrifuge.model.Unit3D` through :func:`conv3d_same`."""

    def __init__(self, unit: Unit3D) -> None:
        super().__init__()
        self.conv3d = unit.conv3d
        self.stride = list(unit.stride)
        self.activation = unit.activation

    def forward(self, x: Tensor) -> Tensor:
        y = conv3d_same(x, self.conv3d.weight, self.conv3d.bias, self.stride)
        return F.relu(y) if self.activation else y


class _SamePool(nn.Module):
    def __init__(self, pool: MaxPool3dSame) -> None:
        super().__init__()
        self.kernel, self.stride = list(pool.kernel_shape), list(pool.stride)

    def forward(self, x: Tensor) -> Tensor:
        return max_pool3d_same(x, self.kernel, self.stride)


def _stage_forward(stage: _DecoderStage, x: Tensor, skip: Tensor) -> Tensor:
    """:meth:`_DecoderStage.forward` with the crop always taken (a no-op where the sizes agree)."""
    x = crop_like(stage.up(x), skip)
    if stage.lateral is not None:
        skip = stage.lateral(skip)
    return stage.fuse(torch.cat([x, skip], dim=1))


def portable_model(model: nn.Module) -> nn.Module:
    """An eval-mode copy of a :class:`~centrifuge.model.Predictor` or
    :class:`~centrifuge.model.PredictorCorrector` with BatchNorm folded and the size-dependent steps as the
    operators above; ``model`` is left as it was. Same call and output as ``model``."""
    net = copy.deepcopy(model).eval().requires_grad_(False)
    if any(getattr(m, "pad_input", False) for m in net.modules()):
        raise ValueError("pad_input models are not supported for export")
    fold_batch_norm(net)
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Unit3D):
                setattr(parent, name, _SameConv(child))
            elif isinstance(child, MaxPool3dSame):
                setattr(parent, name, _SamePool(child))
            elif isinstance(child, _DecoderStage):
                child.forward = _stage_forward.__get__(child)  # type: ignore[method-assign]
    return net


def onnx_translations() -> dict[Callable, Callable]:
    """The ONNX (onnxscript) form of each operator above, for ``torch.onnx.export(custom_translation_table=)``.

    Needs ``onnxscript``. The functions use the default ONNX domain at the exporter's opset (``Conv`` and
    ``MaxPool`` have had ``auto_pad`` since opset 1, ``Slice`` with tensor bounds since opset 10).
    """
    from onnxscript import opset18 as op

    def conv(x, weight, bias, stride):  # noqa: ANN001, ANN202
        if bias is None:
            return op.Conv(x, weight, auto_pad="SAME_UPPER", strides=stride)
        return op.Conv(x, weight, bias, auto_pad="SAME_UPPER", strides=stride)

    def pool(x, kernel, stride):  # noqa: ANN001, ANN202
        y, _ = op.MaxPool(x, auto_pad="SAME_UPPER", kernel_shape=kernel, strides=stride)
        return y

    def crop(x, like):  # noqa: ANN001, ANN202
        return op.Slice(x, op.Constant(value_ints=[0, 0, 0]), op.Shape(like, start=2),
                        op.Constant(value_ints=[2, 3, 4]))

    ops = torch.ops.centrifuge
    return {ops.conv3d_same.default: conv, ops.max_pool3d_same.default: pool, ops.crop_like.default: crop}
