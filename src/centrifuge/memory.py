"""Refuse up front what cannot fit in memory, instead of failing in the allocator after minutes of work.

The estimate is a lower bound: the tensors a request must hold at once (its clips, the model's outputs, and
the largest single activation of the network, measured per input pixel on a small clip). A request is refused
only when that bound exceeds the device's whole memory, so nothing that could run is refused; what passes may
still be too large, but the hopeless cases (a side of 100,000 pixels, a window of 100,000 frames) stop at once.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .errors import CentrifugeError

#: The clip the largest activation is measured on: big enough that no layer's output is mostly padding.
_PROBE = (8, 64, 64)


def device_memory(device: torch.device) -> int:
    """Bytes of memory of ``device``: the GPU's, or the machine's physical memory for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def largest_activation(model: nn.Module, channels: int = 3) -> float:
    """Values in the largest output of any one layer of ``model``, per input pixel (``T * H * W``)."""
    largest = 0

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    param = next(model.parameters(), None)
    x = torch.zeros(1, channels, *_PROBE, device=param.device if param is not None else "cpu",
                    dtype=param.dtype if param is not None and param.is_floating_point() else torch.float32)
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return largest / (_PROBE[0] * _PROBE[1] * _PROBE[2])


def training_activations(model: nn.Module) -> float:
    """Values per input pixel that a training step keeps for its backward pass, at least: the input and the output
    of every BatchNorm layer (BatchNorm's backward needs its input; the convolution or ReLU after it keeps a tensor
    of its output's size). Measured in eval mode, so the probe leaves the running statistics alone."""
    kept: dict[int, torch.Tensor] = {}  # held until the end, so that no two tensors share an address

    def hook(_module: nn.Module, inputs: tuple[object, ...], output: object) -> None:
        for t in (*inputs, output):
            if isinstance(t, torch.Tensor):
                kept[t.data_ptr()] = t

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    param = next(model.parameters())
    x = torch.zeros(1, 3, *_PROBE, device=param.device, dtype=param.dtype)
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(training)
        for h in handles:
            h.remove()
    return sum(t.numel() for t in kept.values()) / (_PROBE[0] * _PROBE[1] * _PROBE[2])


def _gb(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_fits(needed: float, device: torch.device, what: str, advice: str) -> None:
    """:class:`CentrifugeError` if ``needed`` bytes (a lower bound) exceed ``device``'s memory."""
    have = device_memory(device)
    if needed > have:
        place = "GPU" if device.type == "cuda" else "machine"
        raise CentrifugeError(f"{what} needs at least {_gb(needed)} of memory, more than this {place}'s {_gb(have)}; "
                              f"{advice}")
