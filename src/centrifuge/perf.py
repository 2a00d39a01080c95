"""FLOP counting and the machine's measured peak, for MFU in training logs and for ``centrifuge bench``."""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_flops(model: torch.nn.Module, x: torch.Tensor, backward: bool = False) -> int:
    """FLOPs of one forward (and backward, when asked) pass of ``model`` on ``x``."""
    with FlopCounterMode(display=False) as counter:
        out = model(x)
        if backward:
            out.float().sum().backward()
    if backward:
        model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_size(device: torch.device, dtype: torch.dtype, seconds: float) -> int:
    """The matrix size for the peak: 2048 on CPUs and 8192 on GPUs, or smaller where one product would take
    more than ``max(seconds, 1)`` (a dtype emulated in software, e.g. fp16 on most CPUs, would take minutes)."""
    top = 8192 if device.type == "cuda" else 2048
    n = 256
    while n < top:
        a = torch.randn(n, n, device=device, dtype=dtype)
        start = time.perf_counter()
        a @ a
        _sync(device)
        if 8 * (time.perf_counter() - start) > max(seconds, 1.0):  # the next size up costs 8x
            break
        n *= 2
    return n


def measure_peak_flops(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                       n: int | None = None, seconds: float = 1.0) -> float:
    """Achieved FLOP/s of a large square matrix product: the practical peak of this device and dtype."""
    device = torch.device(device)
    n = n or _peak_size(device, dtype, seconds)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    reps, start = 0, time.perf_counter()
    while True:
        a @ b
        reps += 1
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and reps >= 3:
            break
    return 2 * n**3 * reps / elapsed
