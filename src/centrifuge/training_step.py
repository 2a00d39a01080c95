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
* **What a step works on** (:class:`TrainingRun`, made by :func:`new_run`): the model, its DDP wrapper and
  compiled form, the loss, the optimizer, the loss scaler and the weight average, as ``centrifuge.train`` sets
  them up; and **the step itself** (:func:`train_step`), which ``centrifuge train`` runs and ``centrifuge bench
  --train`` times.
* **The allocator** (:func:`keep_freed_memory`): a CPU step allocates and frees the same large tensors every
  time; glibc hands blocks over 32 MB (and, by default, freed heap tops) back to the kernel, which then
  zeroes every page again on the next step's first touch.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn

from .config import TrainConfig
from .distributed import Distributed
from .ema import WeightAverage
from .losses import compiled_pit_loss, pit_loss
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


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on the convolution kernels only: BatchNorm scales and shifts and biases (1-D) are left alone.

    Without decay, one group (the layout of the optimizer state in checkpoints of such runs).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not weight_decay:
        return [{"params": params, "weight_decay": 0.0}]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig,
                   device: torch.device | None = None) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over :func:`parameter_groups`; on ``device``, its fused implementation."""
    groups = parameter_groups(model, cfg.weight_decay)
    options = optimizer_options(device) if device is not None else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, **options)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **options)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r} (sgd or adamw)")


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
    compile_seconds: float = 0.0  # the time ``torch.compile`` of the model took (0: not compiled)


def new_run(model_cfg: ModelConfig, cfg: TrainConfig, device: torch.device, model: nn.Module,
            optimizer: torch.optim.Optimizer, amp: torch.dtype | None, memory_format: torch.memory_format,
            micro: int, accum: int = 1, ddp: nn.Module | None = None, average: WeightAverage | None = None,
            start_step: int = 0, state: dict[str, Any] | None = None) -> TrainingRun:
    """What :func:`train_step` works on: ``model`` (wrapped in ``ddp``, if given) in training mode, its
    ``optimizer``, the fp16 loss scaler (with a resumed run's ``state``), the loss (compiled with
    ``cfg.compile_loss``) and the forward pass (compiled with ``cfg.compile``, now, on zeros of the
    training's micro-batch shape, so that the time is paid once and reported as ``compile_seconds``)."""
    state = state if state is not None else {}
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    if scaler.is_enabled() and state.get("grad_scaler"):
        scaler.load_state_dict(state["grad_scaler"])  # fp16 loss scale and its growth counter, for exact resume
    ddp = model if ddp is None else ddp
    layers_shape = (micro, cfg.videos_per_blend, 3, cfg.frames, cfg.size, cfg.size)
    loss_fn = (compiled_pit_loss(model_cfg.n_layers, layers_shape, device, cfg.tone_free_loss) if cfg.compile_loss
               else functools.partial(pit_loss, tone_free=cfg.tone_free_loss))
    model.train()
    net, seconds = ddp, 0.0
    if cfg.compile:
        mix = torch.zeros(layers_shape[:1] + layers_shape[2:], device=device).to(memory_format=memory_format)
        net, seconds = compile_for_training(ddp, model, mix, torch.zeros(layers_shape, device=device), loss_fn, amp)
    return TrainingRun(model_cfg, cfg, device, model, ddp, net, loss_fn, optimizer, scaler, average, amp,
                       memory_format, micro, accum, start_step, state, seconds)


def _no_lap(part: str) -> None:
    """Training times no part of a step."""


def train_step(run: TrainingRun, dist: Distributed, batches: Iterator[dict[str, torch.Tensor]], step: int,
               lap: Callable[[str], None] = _no_lap) -> tuple[float, tuple[torch.Tensor, ...]]:
    """One update from ``run.accum`` micro-batches of ``batches``: the global batch's loss and the last
    micro-batch's ``(mix, layers, outputs)``.

    ``lap(part)`` is called as each part of the step ends: ``"forward"``, ``"loss"`` and ``"backward"`` once
    per micro-batch, then ``"optimizer"`` (the update, and all that follows the last backward pass); a
    benchmark passes one that reads the clock.
    """
    cfg, device, optimizer = run.cfg, run.device, run.optimizer
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr_at(step)
    loss_acc = torch.zeros((), device=device)
    for micro_i in range(run.accum):
        batch = next(batches)
        mix = batch["mix"].to(device, non_blocking=True, memory_format=run.memory_format)
        layers = batch["layers"].to(device, non_blocking=True)
        # DDP all-reduces gradients on the last micro-batch only; the others just accumulate locally
        last_micro = micro_i == run.accum - 1
        with nullcontext() if (last_micro or not dist.enabled) else run.ddp.no_sync():
            with autocast(device, run.amp):
                outputs = run.net(mix)
            lap("forward")
            loss = run.loss_fn(outputs.float(), layers)[0].mean()
            lap("loss")
            run.scaler.scale(loss / run.accum).backward()
            lap("backward")
        loss_acc += loss.detach() / run.accum
    if dist.enabled:  # the loss of the global batch, identical on every rank
        torch_dist.all_reduce(loss_acc)
        loss_acc /= dist.world_size
    step_loss = loss_acc.item()
    if not math.isfinite(step_loss):
        raise FloatingPointError(f"loss is {step_loss} at step {step}; lower the learning rate")
    if cfg.grad_clip:
        run.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.scaler.step(optimizer)
    run.scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if run.average is not None:
        run.average.update(run.model, step)
    lap("optimizer")
    return step_loss, (mix, layers, outputs)
