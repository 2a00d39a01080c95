"""Where the model runs and at what precision: the device choice and the one rule for ``--precision auto``.

``auto`` is bf16 on GPUs that support it and on CPUs with AMX-BF16 (about 3x faster than fp32 for inference
there, 1.3x for a cpu-small training step; ``docs/performance.md``), fp32 elsewhere: without AMX, bf16
convolutions on CPU are emulated and can be slower than fp32.
"""

from __future__ import annotations

import functools

import torch

from .errors import CentrifugeError

__all__ = ["PRECISIONS", "pick_device", "auto_dtype", "autocast_dtype", "resolve_precision", "cpu_has_fast_bf16",
           "cpu_has_bf16_blocked_layout", "check_precision"]

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str, local_rank: int | None = None) -> torch.device:
    """The device ``auto``/``cpu``/``cuda``/``cuda:N`` names; ``cuda`` is this rank's GPU under torchrun."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank)
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise CentrifugeError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CentrifugeError("--device cuda was asked for but no CUDA GPU is available")
    return device


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX-BF16)."""
    try:
        return bool(torch.cpu.get_capabilities().get("amx_bf16", False))
    except (AttributeError, RuntimeError):  # older PyTorch
        return False


@functools.cache
def cpu_has_bf16_blocked_layout() -> bool:
    """Whether oneDNN runs bf16 convolutions on this CPU (it needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT; on
    AVX2-only CPUs it raises at the first channels-last or prepacked convolution)."""
    try:
        caps = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):  # older PyTorch: assume the common server CPU
        return True
    return bool(caps.get("avx_ne_convert") or all(caps.get(k) for k in ("avx512_bw", "avx512_vl", "avx512_dq")))


def auto_dtype(device: str | torch.device) -> torch.dtype | None:
    """The ``auto`` rule: bf16 where it is fast (see the module docstring), None (fp32) elsewhere."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def check_precision(precision: str) -> str:
    """``precision`` if it is a name this package knows, else a user error."""
    if precision != "auto" and precision not in PRECISIONS:
        raise CentrifugeError(f"unknown precision {precision!r} (use fp32, bf16, fp16 or auto)")
    return precision


def resolve_precision(precision: str, device: str | torch.device) -> torch.dtype:
    """The compute dtype for ``precision`` (``auto``, ``fp32``, ``bf16``, ``fp16``) on ``device``."""
    if precision == "auto":
        return auto_dtype(device) or torch.float32
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (choose from auto, {', '.join(PRECISIONS)})")
    return PRECISIONS[precision]


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype for ``torch.autocast``: None for fp32 (autocast off)."""
    dtype = resolve_precision(precision, device)
    return None if dtype == torch.float32 else dtype
