"""Fast inference: BatchNorm folded into the convolutions, channels-last memory, reduced precision, compile.

Typical use::

    fast = prepare_for_inference(model, "cpu", "fp32")   # a copy; ``model`` is left as it was
    y = fast(x)                                          # float32 [B, n, 3, T, H, W], no autograd

:func:`prepare_for_inference` returns an :class:`InferenceModel`, whose ``forward`` moves the input to the
device, dtype and memory format the prepared network wants and runs it under ``torch.inference_mode``.
Parts of the network (its ``encoder``/``decoder``) can be run the same way inside
:func:`inference_context` with inputs from :meth:`InferenceModel.convert_input`.

Why each step (measured figures in ``docs/performance.md``):

* BatchNorm folding: in eval mode BN is a per-channel affine map, so it merges into the preceding
  convolution's weights and bias. That removes one full pass over every activation.
* ``channels_last_3d``: oneDNN's convolutions work on channels-innermost data; with the default layout
  every convolution reorders its input and output.
* Reduced precision: with BN folded the whole network is cast to bf16/fp16 (no per-op casts, as autocast
  would do). On CPUs with AMX-BF16 bf16 is about 3x faster than fp32; on others it can be slower, so
  ``"auto"`` means bf16 on GPUs that support it and on AMX CPUs, fp32 elsewhere.
* CPU kernels: the convolution units run as single oneDNN calls with weights packed once and the ReLU fused
  (:class:`OneDNNUnit3D`), and :class:`CpuKernels` keeps PyTorch off its slow fallbacks for batch-1 3D
  convolutions, pooling, upsampling and padding (each result is the same as the stock operator's).
* The layers leave the network in float32 and the standard (contiguous) layout, not channels-last: the last
  head is one matrix product with the bias and the residual in it (:func:`centrifuge.thin_layers.pointwise_conv`),
  computed in float32 also by a bf16/fp16 network, so the output needs neither a residual pass nor a
  conversion. What reads the layers next (stitching, the store, statistics) reads this layout fastest.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .devices import cpu_has_bf16_blocked_layout, resolve_precision

__all__ = [
    "fold_batch_norm",
    "inference_context",
    "InferenceModel",
    "prepare_for_inference",
    "OneDNNUnit3D",
    "onednn_available",
    "use_onednn_units",
]

def _fold(conv: nn.Module, bn: nn.BatchNorm3d, transposed: bool) -> None:
    """Merge ``bn`` (running statistics) into ``conv``'s weight and bias, in place."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() - bn.running_mean * scale
    w = conv.weight.detach()
    # Conv3d weights are [out, in, k...]; ConvTranspose3d weights are [in, out, k...].
    shape = (1, -1, 1, 1, 1) if transposed else (-1, 1, 1, 1, 1)
    bias = conv.bias.detach() * scale + shift if conv.bias is not None else shift
    grad = conv.weight.requires_grad
    conv.weight = nn.Parameter(w * scale.reshape(shape), requires_grad=grad)
    conv.bias = nn.Parameter(bias.clone(), requires_grad=grad)


def fold_batch_norm(model: nn.Module) -> int:
    """Fold every BatchNorm of the centrifuge model into its convolution, in place; returns how many.

    Only valid for inference (eval-mode statistics): the model is put in eval mode. Works on
    :class:`~centrifuge.model.Unit3D` (its forward skips a ``None`` BN) and the decoder's upsampling units
    (the BN becomes ``nn.Identity``).
    """
    from .model import Unit3D, _UpUnit3D

    model.eval()
    folded = 0
    for m in model.modules():
        if isinstance(m, Unit3D) and m.bn is not None:
            _fold(m.conv3d, m.bn, transposed=False)
            m.bn = None
            folded += 1
        elif isinstance(m, _UpUnit3D) and isinstance(m.bn, nn.BatchNorm3d):
            _fold(m.conv3d, m.bn, transposed=True)
            m.bn = nn.Identity()
            folded += 1
    return folded


def _triple(v: int | tuple[int, ...] | list[int]) -> list[int]:
    return [int(v)] * 3 if isinstance(v, int) else [int(i) for i in v]


class CpuKernels(TorchFunctionMode):
    """Route the model's CPU convolutions and max-pools to the fastest kernels PyTorch has.

    * ``conv3d`` always goes to oneDNN (``aten.mkldnn_convolution``). PyTorch's own heuristic sends batch-1
      convolutions with small ``C*T*H`` (the decoder's thin full-resolution layers, 1x1x1 convolutions when
      single-threaded) to its im2col fallback, which is much slower on them and returns a contiguous tensor,
      so every later layer loses the channels-last layout too.
    * RGB input (3 channels) is zero-padded to 4 channels, which oneDNN's stem kernels handle better.
    * Stride-1 max-pools (every Inception block has one) run as three 1-D maxima over shifted views
      (2+2+2 instead of 26 comparisons per output); the result is identical.
    * Transposed convolutions with ``kernel == stride`` (the decoder's upsampling: no overlap) are one
      matrix product followed by a depth-to-space copy straight into a channels-last output. PyTorch's
      CPU kernel for them is an unblocked fallback that also returns a contiguous tensor.
    * Constant padding (TF "SAME" with an odd total) of a channels-last tensor keeps the layout
      (``F.pad`` would return a contiguous tensor, to be converted back by the next convolution).

    Only tensors that need no gradient are rerouted; anything else is passed through unchanged.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        route = _CPU_ROUTES.get(func)
        out = route(*args, **kwargs) if route is not None else None  # None: not a case the route takes
        return func(*args, **kwargs) if out is None else out

    @staticmethod
    def _conv_transpose3d(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                          stride: int | tuple[int, ...] = 1, padding: int | tuple[int, ...] = 0,
                          output_padding: int | tuple[int, ...] = 0, groups: int = 1,
                          dilation: int | tuple[int, ...] = 1) -> Tensor | None:
        kernel = list(weight.shape[2:])
        if (x.device.type != "cpu" or x.dim() != 5 or x.requires_grad or weight.requires_grad or groups != 1
                or _triple(stride) != kernel or _triple(padding) != [0, 0, 0]
                or _triple(output_padding) != [0, 0, 0] or _triple(dilation) != [1, 1, 1]
                or weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype)):
            return None
        b, cin, t, h, w = x.shape
        cout = weight.shape[1]
        kt, kh, kw = kernel
        # Every input cell maps to its own kt*kh*kw block of outputs: [cells, cin] @ [cin, (kt, kh, kw, cout)].
        cells = x.permute(0, 2, 3, 4, 1).reshape(-1, cin)  # a view for channels-last input
        wmat = weight.permute(0, 2, 3, 4, 1).reshape(cin, -1)
        if bias is None:
            y = cells @ wmat
        else:
            y = torch.addmm(bias.repeat(kt * kh * kw), cells, wmat)
        out = torch.empty((b, cout, t * kt, h * kh, w * kw), dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last_3d)
        blocks = y.view(b, t, h, w, kt, kh, kw, cout).permute(0, 1, 4, 2, 5, 3, 6, 7)
        out.permute(0, 2, 3, 4, 1).view(b, t, kt, h, kh, w, kw, cout).copy_(blocks)
        return out

    @staticmethod
    def _pad(x: Tensor, pad: list[int] | tuple[int, ...], mode: str = "constant",
             value: float | None = None) -> Tensor | None:
        if (mode != "constant" or x.dim() != 5 or len(pad) > 6 or any(p < 0 for p in pad) or x.requires_grad
                or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last_3d)):
            return None
        full = list(pad) + [0] * (6 - len(pad))
        shape = list(x.shape)
        index: list[slice] = [slice(None), slice(None)]
        for d in range(3):  # pad lists the last dimension first
            lo, hi = full[2 * (2 - d)], full[2 * (2 - d) + 1]
            shape[2 + d] += lo + hi
            index.append(slice(lo, lo + x.shape[2 + d]))
        out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last_3d)
        out.fill_(0.0 if value is None else value)
        out[tuple(index)] = x
        return out

    @staticmethod
    def _conv3d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int | tuple[int, ...] = 1,
                padding: int | tuple[int, ...] | str = 0, dilation: int | tuple[int, ...] = 1,
                groups: int = 1) -> Tensor | None:
        if (isinstance(padding, str) or x.device.type != "cpu" or x.dim() != 5 or x.requires_grad
                or weight.requires_grad or x.dtype not in (torch.float32, torch.bfloat16)
                or weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype)):
            return None
        if groups == 1 and x.shape[1] == 3:
            # RGB input: oneDNN's stem kernels run 4 input channels faster than 3; the zero
            # channel adds nothing to the result.
            x4 = torch.empty((x.shape[0], 4, *x.shape[2:]), dtype=x.dtype, memory_format=torch.channels_last_3d)
            x4[:, :3] = x
            x4[:, 3:] = 0
            w4 = torch.zeros((weight.shape[0], 4, *weight.shape[2:]), dtype=x.dtype)
            w4[:, :3] = weight
            x, weight = x4, w4
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, _triple(padding), _triple(stride),
                                                 _triple(dilation), groups)

    @staticmethod
    def _max_pool3d(x: Tensor, kernel_size: int | tuple[int, ...], stride: int | tuple[int, ...] | None = None,
                    padding: int | tuple[int, ...] = 0, dilation: int | tuple[int, ...] = 1,
                    ceil_mode: bool = False, return_indices: bool = False) -> Tensor | None:
        kernel = _triple(kernel_size)
        strides = _triple(stride) if stride else kernel
        if (return_indices or ceil_mode or _triple(dilation) != [1, 1, 1] or strides != [1, 1, 1]
                or x.requires_grad or x.dim() != 5):
            return None
        pads = _triple(padding)
        for d in (2, 1, 0):  # innermost spatial dimension first
            if kernel[d] == 3 and pads[d] == 1:
                x = _max3(x, 2 + d)
            elif kernel[d] > 1:
                k, p = [1, 1, 1], [0, 0, 0]
                k[d], p[d] = kernel[d], pads[d]
                x = torch.max_pool3d(x, k, 1, p)
        return x



#: What :class:`CpuKernels` reroutes: a function, and the route it takes (which returns None for a call it
#: declines, and the function itself then runs).
_CPU_ROUTES: dict[Callable[..., Tensor], Callable[..., Tensor | None]] = {
    torch.conv3d: CpuKernels._conv3d,
    F.max_pool3d: CpuKernels._max_pool3d,
    torch.conv_transpose3d: CpuKernels._conv_transpose3d,
    F.pad: CpuKernels._pad,
}

def _max3(x: Tensor, dim: int) -> Tensor:
    """Max over a window of 3 along ``dim``, stride 1, the border padded with -inf (same size out)."""
    n = x.shape[dim]
    if n == 1:
        return x
    pairs = torch.maximum(x.narrow(dim, 0, n - 1), x.narrow(dim, 1, n - 1))  # max of (i, i + 1)
    out = torch.empty_like(x)
    torch.maximum(pairs.narrow(dim, 0, n - 2), pairs.narrow(dim, 1, n - 2), out=out.narrow(dim, 1, n - 2))
    out.narrow(dim, 0, 1).copy_(pairs.narrow(dim, 0, 1))
    out.narrow(dim, n - 1, 1).copy_(pairs.narrow(dim, n - 2, 1))
    return out


@contextmanager
def inference_context(device: str | torch.device, dtype: torch.dtype = torch.float32, cpu_kernels: bool = True,
                      autocast: bool = True) -> Iterator[None]:
    """``torch.inference_mode``; autocast to ``dtype`` if it is not fp32 and ``autocast`` (not wanted for a
    network already cast to ``dtype``: CPU autocast runs pools in fp32, converting back and forth); on CPU
    :class:`CpuKernels` unless ``cpu_kernels=False``."""
    device = torch.device(device)
    kernels = CpuKernels() if cpu_kernels and device.type == "cpu" else nullcontext()
    amp = autocast and dtype != torch.float32
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=amp), kernels:
        yield


def onednn_available() -> bool:
    """Whether this PyTorch build has the oneDNN operators :class:`OneDNNUnit3D` uses."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class OneDNNUnit3D(nn.Module):
    """CPU inference version of a BN-folded :class:`~centrifuge.model.Unit3D`: the same convolution with
    TF "SAME" padding, run by oneDNN with the weights reordered once (per input shape) into its blocked
    layout and the ReLU fused into the convolution. Eager oneDNN calls reorder the weights on every call,
    which costs as much as the convolution itself for the deep layers' small feature maps.

    Falls back to the wrapped unit's own forward for anything else (gradients, other devices or dtypes).
    """

    def __init__(self, unit: nn.Module) -> None:
        super().__init__()
        if getattr(unit, "bn", None) is not None:
            raise ValueError("fold the BatchNorm first (fold_batch_norm)")
        self.unit = unit
        self._packed: dict[tuple[Any, ...], tuple[Tensor, Tensor | None]] = {}

    def forward(self, x: Tensor) -> Tensor:
        from .model import _flat_pad, _same_pads

        unit = self.unit
        w, b = unit.conv3d.weight, unit.conv3d.bias
        if (x.device.type != "cpu" or x.dim() != 5 or x.requires_grad or w.requires_grad
                or x.dtype not in (torch.float32, torch.bfloat16) or w.dtype != x.dtype):
            return unit(x)
        pads = _same_pads(x.shape[-3:], unit.kernel_shape, unit.stride)
        if all(lo == hi for lo, hi in pads):
            padding = [lo for lo, _ in pads]
        else:
            x = F.pad(x, _flat_pad(pads))
            padding = [0, 0, 0]
        if x.shape[1] == 3:  # see CpuKernels: 4 input channels run faster than 3
            x4 = torch.empty((x.shape[0], 4, *x.shape[2:]), dtype=x.dtype, memory_format=torch.channels_last_3d)
            x4[:, :3] = x
            x4[:, 3:] = 0
            x = x4
        key = (tuple(x.shape), x.dtype, x.is_contiguous())
        packed = self._packed.get(key)
        if packed is None:
            weight = w
            if weight.shape[1] != x.shape[1]:
                weight = torch.zeros((w.shape[0], x.shape[1], *w.shape[2:]), dtype=w.dtype)
                weight[:, : w.shape[1]] = w
            if len(self._packed) >= 4:  # a few input shapes at most (e.g. windows at the end of a video)
                self._packed.clear()
            packed = (torch.ops.mkldnn._reorder_convolution_weight(weight, padding, list(unit.stride), [1, 1, 1], 1,
                                                                   list(x.shape)), b)
            self._packed[key] = packed
        return torch.ops.mkldnn._convolution_pointwise(x, packed[0], packed[1], padding, list(unit.stride), [1, 1, 1],
                                                       1, "relu" if unit.activation else "none", [], "")


def use_onednn_units(model: nn.Module) -> int:
    """Wrap every BN-folded ``Unit3D`` of ``model`` in :class:`OneDNNUnit3D`, in place; returns how many.

    Only for CPU inference (the packed weights are a snapshot: do not train the result).
    """
    from .model import Unit3D

    count = 0
    for parent in list(model.modules()):
        if isinstance(parent, OneDNNUnit3D):
            continue
        for name, child in list(parent.named_children()):
            if isinstance(child, Unit3D) and child.bn is None:
                setattr(parent, name, OneDNNUnit3D(child))
                count += 1
    return count


def _last_decoder(net: nn.Module) -> nn.Module | None:
    """The decoder whose head writes ``net``'s final layers: a Predictor's, or a PredictorCorrector's last
    corrector's (whose correction is added to the layers before it); None for other networks."""
    from .model import UNetDecoder

    correctors = getattr(net, "correctors", None)
    last = correctors[-1] if isinstance(correctors, nn.ModuleList) and len(correctors) else net
    decoder = getattr(last, "decoder", None)
    return decoder if isinstance(decoder, UNetDecoder) else None


class InferenceModel(nn.Module):
    """A network prepared by :func:`prepare_for_inference`; call it like the original model.

    Attributes:
        module: the prepared network (folded, cast, in ``memory_format``); ``compiled`` is what runs.
        device, memory_format, input_dtype: what inputs are converted to; ``dtype``: the compute dtype.
    """

    def __init__(self, module: nn.Module, device: torch.device, dtype: torch.dtype, channels_last: bool,
                 compile: bool, cast: bool, cpu_kernels: bool = True) -> None:
        super().__init__()
        self.module = module
        self.device = device
        self.dtype = dtype
        # A cast network takes inputs in its dtype; otherwise autocast lowers the ops from fp32 inputs.
        self.input_dtype = dtype if cast else torch.float32
        self.memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        self.compiled = torch.compile(module, dynamic=False) if compile else module
        # Inductor picks its own kernels; the rerouting is for eager mode.
        self.cpu_kernels = cpu_kernels and not compile

    def context(self) -> contextlib.AbstractContextManager[None]:
        """The :func:`inference_context` this model runs in (for running its parts separately)."""
        return inference_context(self.device, self.dtype, self.cpu_kernels, autocast=self.input_dtype != self.dtype)

    def convert_input(self, x: Tensor) -> Tensor:
        """``x`` on the model's device, in its dtype and memory format (one copy at most)."""
        return x.to(device=self.device, dtype=self.input_dtype, memory_format=self.memory_format, non_blocking=True)

    def forward(self, x: Tensor, output_dtype: torch.dtype | None = torch.float32) -> Tensor:
        """Run on ``x`` ``[B, 3, T, H, W]``; the output is in the standard layout, cast to ``output_dtype``
        (None: keep, which is float32 for a Predictor or PredictorCorrector: their last head writes float32)."""
        with self.context():
            y = self.compiled(self.convert_input(x))
            # A no-op for a Predictor's layers (its head writes this layout); a copy for a PredictorCorrector's
            # (its final sum takes the channels-last layout of the predictor's layers).
            y = y.contiguous()
            return y if output_dtype is None else y.to(output_dtype)


def prepare_for_inference(model: nn.Module, device: str | torch.device = "cpu", precision: str = "auto",
                          channels_last: bool = True, compile: bool = False, fuse: bool = True,
                          inplace: bool = False, cpu_kernels: bool = True) -> InferenceModel:
    """An inference-only version of ``model`` on ``device``.

    Args:
        model: a :class:`~centrifuge.model.Predictor` or :class:`~centrifuge.model.PredictorCorrector`.
        device: where to run.
        precision: ``auto`` (see :func:`centrifuge.devices.resolve_precision`), ``fp32``, ``bf16`` or ``fp16``.
        channels_last: use ``torch.channels_last_3d`` for weights and activations.
        compile: ``torch.compile`` the network (first calls are slow; needs a C++ compiler on CPU).
        fuse: fold BatchNorm into the convolutions (needed to cast the whole network to bf16/fp16;
            without it reduced precision uses autocast).
        inplace: modify ``model`` itself instead of a copy.
        cpu_kernels: on CPU, run the convolution units with prepacked weights and fused ReLU
            (:class:`OneDNNUnit3D`, needs ``fuse``) and reroute the other convolutions and the pools to
            faster kernels (:class:`CpuKernels`).
    """
    device = torch.device(device)
    dtype = resolve_precision(precision, device)
    net = model if inplace else copy.deepcopy(model)
    net.eval().requires_grad_(False)
    if fuse:
        fold_batch_norm(net)
    net.to(device)
    cast = fuse and dtype != torch.float32
    if cast:
        net.to(dtype)
    if device.type == "cpu" and dtype == torch.bfloat16 and not cpu_has_bf16_blocked_layout():
        # oneDNN's bf16 kernels raise on such CPUs; PyTorch's default bf16 convolution still runs there
        channels_last = cpu_kernels = False
    if channels_last:
        net.to(memory_format=torch.channels_last_3d)
    if fuse and cpu_kernels and not compile and device.type == "cpu" and onednn_available():
        use_onednn_units(net)
    last = _last_decoder(net)
    if last is not None:  # the final layers in float32 and the standard layout, from the head itself
        last.out_dtype = torch.float32
    # With BN left in, weights stay fp32 and autocast (in InferenceModel.forward) lowers the convolutions.
    return InferenceModel(net, device, dtype, channels_last, compile, cast, cpu_kernels)
