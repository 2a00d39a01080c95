"""How a training step runs fast: memory layout, the compiled model, the optimizer's implementation.

None of this changes what is computed, only how: the same convolutions, BatchNorm statistics, loss and
update, with floating-point results that differ in rounding only (``tests/test_training_step.py``).

* **Channels-last** (``channels_last_3d``) on CPUs and GPUs: oneDNN's and cuDNN's fast convolutions work on
  channels-last data; in the default layout every convolution reorders its input and output.
* **The compiled model** (``--compile``, off by default): ``torch.compile`` with Inductor fuses each
  BatchNorm-ReLU pair and the concatenations into the convolutions' neighbours, forward and backward. With
  the thin layers below it adds about 3% to a cpu-small step (docs/performance.md). Compiling costs seconds
  with a warm cache and minutes cold, once per run; :func:`compile_for_training` pays it
  at start-up, on a batch of the training's shape, so the first step's time and the logged rates are not
  distorted by it, and falls back to the eager model (one warning) where compiling is not possible.
* **Fused optimizer steps** (:func:`optimizer_options`): one kernel over all parameters instead of a loop
  over ~200 tensors with several element-wise passes each.
* **Thin layers** (``centrifuge.thin_layers``): the decoder's full-resolution BatchNorm and head run in a
  layout that suits them.
* **What a step works on** (:class:`TrainingRun`): the model, its DDP wrapper and compiled form, the loss, the
  optimizer, the loss scaler and the weight average, as ``centrifuge.train`` sets them up.
* **The allocator** (:func:`keep_freed_memory`): a CPU step allocates and frees the same large tensors every
  time; glibc hands blocks over 32 MB (and, by default, freed heap tops) back to the kernel, which then
  zeroes every page again on the next step's first touch.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .config import TrainConfig
from .ema import WeightAverage
from .model import ModelConfig

log = logging.getLogger("centrifuge")

PitLoss = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def training_memory_format(device: torch.device) -> torch.memory_format:
    """The layout of the model and its input in training: channels-last on CPUs and GPUs alike."""
    return torch.channels_last_3d


# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@functools.cache
def keep_freed_memory() -> bool:
    """Make this process's C allocator (glibc) keep freed memory for reuse instead of returning it to the
    kernel: no block is mmap-ed on its own and the heap is never trimmed. Training allocates the same
    tensors every step, so its peak memory is what it holds anyway; the pages stop being faulted in and
    zeroed again each step (docs/performance.md). Returns whether it took effect (False where the C library
    has no ``mallopt``). Once per process; only for training, whose working set is steady.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):  # no mallopt: not glibc
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def optimizer_options(device: torch.device) -> dict[str, bool]:
    """Keyword arguments of SGD and AdamW that select their fused (one-kernel) implementation where ``device``
    has one. A resumed optimizer takes them again (a checkpoint's parameter groups carry its writer's)."""
    return {"fused": device.type in ("cpu", "cuda")}


def autocast(device: torch.device, amp: torch.dtype | None) -> torch.autocast:
    """The mixed-precision context of the forward pass; ``amp`` None: full precision, whatever the caller's."""
    return torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)


def compile_for_training(net: nn.Module, model: nn.Module, mix: torch.Tensor, layers: torch.Tensor,
                         loss_fn: PitLoss, amp: torch.dtype | None) -> tuple[nn.Module, float]:
    """``net`` compiled with ``torch.compile`` for training on batches shaped like ``mix``/``layers``.

    Compiles now, with one forward and backward pass (forward in ``amp``, then ``loss_fn``) on the given
    batch, and returns ``(compiled, seconds)``. ``model`` (the module whose parameters ``net`` trains; ``net``
    itself or what it wraps) is left exactly as it was: its weights, BatchNorm statistics and gradients are
    restored. Where compiling fails (no C++ compiler, no Triton) it warns once and returns ``(net, 0.0)``:
    training goes on with the eager model.
    """
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    compiled = torch.compile(net, dynamic=False)
    start = time.perf_counter()
    try:
        with autocast(mix.device, amp):
            out = compiled(mix)
        loss_fn(out.float(), layers)[0].mean().backward()
    except Exception as e:  # noqa: BLE001 - any compiler failure means: train the eager model
        log.warning("torch.compile of the model failed, training the eager model (%s)",
                    (str(e).strip().splitlines() or [type(e).__name__])[0][:200])
        return net, 0.0
    finally:
        with torch.no_grad():
            model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
    return compiled, time.perf_counter() - start


@dataclass
class TrainingRun:
    """What the training loop works on, as ``centrifuge.train`` sets it up."""

    model_cfg: ModelConfig
    cfg: TrainConfig
    device: torch.device
    model: torch.nn.Module  # this rank's weights (what is saved)
    ddp: torch.nn.Module  # ``model``, wrapped in DistributedDataParallel when there are several ranks
    net: torch.nn.Module  # what runs the forward pass: ``ddp``, compiled with ``--compile``
    loss_fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    average: WeightAverage | None
    amp: torch.dtype | None
    memory_format: torch.memory_format
    micro: int
    accum: int
    start_step: int
    state: dict[str, Any]  # the saved state resumed from ({} for a new run)
