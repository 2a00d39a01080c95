"""Training (Sec. 4.1): SGD on blended pairs with the permutation-invariant loss.

One process, or one process per device under ``torchrun`` (DistributedDataParallel set up from torchrun's
environment variables; NCCL on GPUs, gloo on CPU).

Batches are a pure function of the step: item ``i`` of the global batch at step ``s`` is dataset index
``s * batch_size + i``, and rank ``r`` of ``N`` takes items ``r * batch_size / N`` onwards. Each item's
randomness (videos, window, crop, flip, alpha) comes from its dataset index alone, never from the rank. So a
resumed run sees exactly the batches an uninterrupted run would, and ``N`` ranks see the same global batch
as one process. Gradients are averaged over the ranks (DDP) and over the micro-batches of a rank (gradient
accumulation), so the update equals that of one process with the same global batch and micro-batch.

A checkpoint (weights, optimizer state, step, config) holds nothing per rank: it resumes under any number of
ranks. Only rank 0 writes the run folder (checkpoints, TensorBoard logs); it also reads it on resume and
sends the state to the other ranks, so other machines need not see the run folder.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from . import devices
from .augment import Augmentation
from .checkpoint import (
    CONFIG,
    load_model,
    load_training_state,
    read_model_info,
    recover_checkpoint,
    save_checkpoint,
)
from .config import TrainConfig, config_to_dict, read_run_config, validate_train_config
from .data import BlendDataset, ClipSpec
from .devices import autocast_dtype, pick_device
from .distributed import Distributed, StepBatchSampler, on_rank0, split_batch
from .ema import WeightAverage
from .errors import CentrifugeError
from .locks import hold_folder
from .model import ModelConfig, build_model
from .monitor import Monitor
from .sources import training_videos
from .training_step import (
    TrainingRun,
    keep_freed_memory,
    make_optimizer,
    new_run,
    optimizer_options,
    train_step,
    training_memory_format,
)

if TYPE_CHECKING:
    from .synth import PhotoSynth

log = logging.getLogger("centrifuge")

#: ``TrainConfig`` fields that may change when a run is resumed. They do not change which clips are seen or
#: how the loss is defined: where the data and the run live, how the global batch is split into forward
#: passes, devices and logging. ``iterations`` may change too: it extends (or shortens) the run, and the
#: learning-rate milestones scale with it. ``micro_batch`` and ``sync_bn`` change which clips share
#: BatchNorm statistics (see docs/distributed.md), ``precision`` the arithmetic; all three may have to
#: change with the hardware, so they are allowed.
RESUME_FIELDS = frozenset({
    "init", "data", "photos", "cutouts", "kinetics_csv", "file_list", "out", "iterations", "micro_batch", "workers",
    "preload", "device", "precision", "sync_bn", "compile", "compile_loss", "log_every", "ckpt_every", "image_every",
    "val_data", "val_every", "val_pairs",
})

def check_cpu_bf16_training(amp: torch.dtype | None, device: torch.device) -> None:
    """Refuse bf16 training on a CPU without AMX: there oneDNN's bf16 convolution weight gradients are wrong
    whenever a 3x3x3 kernel spans more frames than the clip has left (2 frames at Mixed_5c of a 16-frame
    clip: off by more than the gradient itself on an AVX512-BF16 Xeon; docs/performance.md), and bf16 is
    slower than fp32 there anyway."""
    if device.type == "cpu" and amp == torch.bfloat16 and not devices.cpu_has_fast_bf16():
        raise ValueError("--precision bf16 trains only on CPUs with AMX: on this one oneDNN's bf16 weight "
                         "gradients are wrong for short clips, and bf16 is slower than fp32; use fp32 or auto")


def photo_synth(cfg: TrainConfig) -> PhotoSynth | None:
    """The renderer of training clips from ``cfg.photos`` (and ``cfg.cutouts``); None without photos."""
    if not cfg.photos:
        return None
    from .synth import PhotoSynth, SynthConfig

    synth = SynthConfig(flow=cfg.synth_motion, parallax=cfg.synth_motion, fast=cfg.synth_fast,
                        camera=cfg.synth_camera)
    return PhotoSynth(cfg.photos, cfg.cutouts, seed=cfg.seed, cfg=synth)


def resume_config(saved: TrainConfig, given: TrainConfig) -> TrainConfig:
    """The config a resumed run continues with: ``saved``, with the :data:`RESUME_FIELDS` of ``given``."""
    return replace(saved, **{f: getattr(given, f) for f in RESUME_FIELDS})


def changed_fields(saved: TrainConfig, given: TrainConfig) -> list[str]:
    """Fields outside :data:`RESUME_FIELDS` in which ``given`` differs from ``saved``."""
    a, b = asdict(saved), asdict(given)
    return [f.name for f in fields(TrainConfig)
            if f.name not in RESUME_FIELDS and _norm(a[f.name]) != _norm(b[f.name])]


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value


def _read_checkpoint(out: Path) -> dict[str, Any] | None:
    """The run in ``out`` on the CPU: configs, state (``step``...), weights, optimizer state; None if none."""
    recover_checkpoint(out)  # a checkpoint write cut short: finish it if it was committed, else drop it
    if not (out / CONFIG).exists():
        return None
    saved_model, saved_cfg, _ = read_run_config(out)
    model = build_model(saved_model)
    optimizer = make_optimizer(model, saved_cfg)
    average = build_model(saved_model) if saved_cfg.ema else None
    state = load_training_state(out, model, optimizer, average)
    return {"model_cfg": saved_model, "cfg": saved_cfg, "state": state, "weights": model.state_dict(),
            "optimizer": optimizer.state_dict(), "average": average.state_dict() if average is not None else None}


def train(model_cfg: ModelConfig, cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train a model; returns the final ``config.json`` state (step, loss, timings).

    Under ``torchrun`` every rank calls this; ``cfg.batch_size`` is the global batch. With ``resume``, the
    run in ``cfg.out`` continues from its checkpoint with its own model and training config, except for the
    :data:`RESUME_FIELDS` taken from ``cfg``; without a checkpoint there, a new run starts.
    """
    validate_train_config(cfg)
    dist = Distributed.from_env(cfg.device)
    try:
        with ExitStack() as cleanup:  # closes the progress bar and TensorBoard writer, on errors too
            if dist.is_main:  # one run at a time in a run folder; rank 0 alone writes it
                cleanup.enter_context(hold_folder(cfg.out, "run folder", remove_if_empty=True))
            return _train(dist, model_cfg, cfg, resume, progress, cleanup)
    finally:
        # On error this also releases the other ranks' pending collectives (gloo) instead of leaving them to
        # the timeout; torchrun then stops every rank and exits non-zero.
        dist.close()


def _train(dist: Distributed, model_cfg: ModelConfig, cfg: TrainConfig, resume: bool, progress: bool,
           cleanup: ExitStack) -> dict[str, Any]:
    """The training loop: set-up, data, step, logging, checkpoint (one stage function each, below)."""
    run = _set_up(dist, model_cfg, cfg, resume)
    model_cfg, cfg = run.model_cfg, run.cfg
    loader, n_videos = _make_loader(cfg, run.start_step, dist, run.device)
    monitor = Monitor(dist, run, n_videos, progress, cleanup) if dist.is_main else None
    saver = _Checkpointer(dist, run)  # its clock (the run's training time) starts here
    batches = iter(loader)
    step = run.start_step
    while step < cfg.iterations:
        step_loss, last_batch = train_step(run, dist, batches, step)
        step += 1
        if monitor is not None:  # rank 0 logs, validates and saves
            monitor.after_step(step, step_loss, last_batch)
            if step % cfg.ckpt_every == 0 or step == cfg.iterations:
                saver.save(step, monitor.checkpoint_loss(step, step_loss), monitor)
    if dist.enabled:
        torch_dist.barrier()  # no rank leaves (and tears the group down) before rank 0 has saved
    return saver.state or {"step": step, **config_to_dict(model_cfg, cfg)}


@dataclass
class _Start:
    """Where a run starts: its configs (a resumed run's own), and the checkpoint it resumes or ``--init``'s weights."""

    model_cfg: ModelConfig
    cfg: TrainConfig
    ckpt: dict[str, Any] | None = None
    init_weights: dict[str, Any] | None = None
    add_corrector: bool = False  # --init's weights are a predictor's; the corrector asked for starts fresh
    state: dict[str, Any] = field(default_factory=dict)
    step: int = 0


def check_training_memory(model: torch.nn.Module, cfg: TrainConfig, micro: int, device: torch.device,
                          amp: torch.dtype | None) -> None:
    """Refuse (one line, before any step) a micro-batch that cannot fit in ``device``'s memory (``centrifuge.memory``).

    The bound: per clip, the blend, its targets and the model's outputs in fp32, and the activations the backward
    pass keeps (at least BatchNorm's inputs and outputs, in the autocast precision); plus weights, gradients and
    two optimizer buffers. Real use is higher (convolution workspaces, the loss, the data loader's batches).
    """
    from .memory import check_fits, training_activations

    pixels = cfg.frames * cfg.size * cfg.size
    act_bytes = 2 if amp in (torch.bfloat16, torch.float16) else 4
    per_clip = pixels * (4 * 3 * (1 + cfg.videos_per_blend + model.n_layers) + act_bytes * training_activations(model))
    params = sum(p.numel() for p in model.parameters())
    check_fits(micro * per_clip + 4 * 4 * params, device,
               f"training on {micro} clip{'s' * (micro != 1)} of {cfg.frames} frames at {cfg.size} pixels per step",
               "lower --size, --frames or --micro-batch (gradient accumulation keeps the batch size)")


def check_layers_for_blends(model_cfg: ModelConfig, cfg: TrainConfig) -> None:
    """Refuse (one line) a model with fewer output layers than the videos in each training blend: the loss
    matches each video to its own layer, so training could only fail at its first step."""
    n, k = model_cfg.n_layers, cfg.videos_per_blend
    if n >= k:
        return
    layers = f"{n} output layer{'s' * (n != 1)}"
    if cfg.init:
        raise CentrifugeError(f"--init {cfg.init}: this model has {layers}, but training separates blends of {k} "
                              f"videos into one layer each; start from a model with at least {k} output layers "
                              f"(or drop --init and pass --layers {k})")
    raise CentrifugeError(f"--layers {n}: training separates blends of {k} videos into one layer each, so the "
                          f"model needs at least {k} output layers")


def _starting_point(dist: Distributed, model_cfg: ModelConfig, cfg: TrainConfig, resume: bool) -> _Start:
    """The configs and saved state a run starts from; rank 0's hold for every rank, whatever the others were given."""
    out = Path(cfg.out)

    def restore() -> dict[str, Any] | None:
        ckpt = _read_checkpoint(out)
        if ckpt is not None:
            ignored = changed_fields(ckpt["cfg"], cfg)
            if ignored:
                log.warning("resuming %s with its saved settings; ignoring %s", out, ", ".join(ignored))
            ckpt["cfg"] = resume_config(ckpt["cfg"], cfg)
        else:
            log.info("no run to resume in %s: starting a new one", out)
        return ckpt

    ckpt = on_rank0(dist, restore) if resume else None
    if ckpt is not None:
        start = _Start(ckpt["model_cfg"], ckpt["cfg"], ckpt, state=ckpt["state"], step=int(ckpt["state"]["step"]))
    else:
        start = _Start(*on_rank0(dist, lambda: (model_cfg, cfg)))
    if ckpt is None and start.cfg.init:
        # Fine-tuning: the architecture comes with the weights. Rank 0 reads them; DDP hands them to the others.
        # One exception: a corrector asked for, where the weights have none, is added after their predictor.
        asked, init_cfg = start.model_cfg, on_rank0(dist, lambda: read_model_info(start.cfg.init)[0])
        start.add_corrector = asked.corrector and not init_cfg.corrector
        start.model_cfg = replace(init_cfg, corrector=True, corrector_steps=asked.corrector_steps) \
            if start.add_corrector else init_cfg
    check_layers_for_blends(start.model_cfg, start.cfg)
    if ckpt is None and start.cfg.init and dist.is_main:
        start.init_weights = load_model(start.cfg.init)[0].state_dict()
        log.info("starting from the weights of %s%s", start.cfg.init,
                 " and a new corrector after them" if start.add_corrector else "")
    return start


def _build(start: _Start, dist: Distributed, device: torch.device, memory_format: torch.memory_format
           ) -> torch.nn.Module:
    """The model on its device: the same initial weights on every rank, or ``--init``'s."""
    torch.manual_seed(start.cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_model(start.model_cfg).to(device)
    model.to(memory_format=memory_format)
    if start.cfg.sync_bn and dist.enabled:
        if device.type == "cpu":
            raise ValueError("--sync-bn needs GPUs: torch's SyncBatchNorm does not run on CPU tensors")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if start.init_weights is not None:
        # A new corrector's last convolution starts near zero: training starts from --init's layers.
        (model.predictor if start.add_corrector else model).load_state_dict(start.init_weights)
        start.init_weights = None
    return model


def _restore(start: _Start, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             average: WeightAverage | None, device: torch.device) -> None:
    """A resumed run's weights, optimizer state and weight average (then the checkpoint is let go)."""
    if start.ckpt is None:
        return
    model.load_state_dict(start.ckpt["weights"])
    optimizer.load_state_dict(start.ckpt["optimizer"])
    for group in optimizer.param_groups:  # this machine's implementation, not the checkpoint writer's
        group.update(optimizer_options(device))
    if average is not None:
        average.model.load_state_dict(start.ckpt["average"])
    start.ckpt = None


def _set_up(dist: Distributed, model_cfg: ModelConfig, cfg: TrainConfig, resume: bool) -> TrainingRun:
    """Configs (a resumed run's own), the model on its device, optimizer, weight average, loss scaler, DDP."""
    start = _starting_point(dist, model_cfg, cfg, resume)
    model_cfg, cfg, resumed = start.model_cfg, start.cfg, start.ckpt is not None
    device = pick_device(cfg.device, dist.local_rank if dist.enabled else None)
    amp = autocast_dtype(cfg.precision, device)
    check_cpu_bf16_training(amp, device)  # before any model is built
    if device.type == "cpu":
        keep_freed_memory()
    _, micro, accum = split_batch(cfg.batch_size, dist.world_size, cfg.micro_batch)
    memory_format = training_memory_format(device)
    model = _build(start, dist, device, memory_format)
    check_training_memory(model, cfg, micro, device, amp)
    optimizer = make_optimizer(model, cfg, device)
    # The ranks hold the same weights: one average, on the rank that saves it. It starts from the weights of
    # --init (loaded above) or, on resume, from the checkpoint's average (a resumed run keeps its --ema).
    average = WeightAverage(model, cfg.ema) if cfg.ema and dist.is_main else None
    _restore(start, model, optimizer, average, device)
    if resumed and dist.is_main:
        log.info("resuming %s at step %d", cfg.out, start.step)
    # Nothing in the model draws random numbers today; anything that does (dropout) should differ per rank.
    torch.manual_seed(cfg.seed + 1_000_003 * (dist.rank + 1))
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if dist.enabled else model
    run = new_run(model_cfg, cfg, device, model, optimizer, amp, memory_format, micro, accum, ddp, average,
                  start.step, start.state)
    if run.net is not ddp and dist.is_main:
        log.info("compiled the model for training in %.1f s", run.compile_seconds)
    return run


def _make_loader(cfg: TrainConfig, start_step: int, dist: Distributed, device: torch.device) -> tuple[DataLoader, int]:
    """The training blends from ``start_step`` on, this rank's share; and the number of training videos."""
    # Rank 0 lists the videos for everyone: one scan of the file system, and the same list on every rank
    # (the list decides which videos each dataset index blends).
    videos = on_rank0(dist, lambda: [str(p) for p in training_videos(cfg)])
    if len(videos) < cfg.videos_per_blend and not cfg.photos:
        raise ValueError(f"need at least {cfg.videos_per_blend} training videos, found {len(videos)}")
    synth = photo_synth(cfg)
    spec = ClipSpec(frames=cfg.frames, size=cfg.size, train=True, resize_factor=cfg.resize_factor,
                    augment=Augmentation() if cfg.augment else None)
    dataset = BlendDataset(videos, spec, k=cfg.videos_per_blend, alpha=cfg.alpha, alpha_range=cfg.alpha_range,
                           frozen=cfg.frozen, preload=cfg.preload, seed=cfg.seed,
                           length=cfg.iterations * cfg.batch_size, synth=synth, photo_fraction=cfg.photo_fraction,
                           reflection=cfg.reflection, tone_match=cfg.tone_match,
                           same_photo=cfg.same_photo, still_layer=cfg.still_layer,
                           motion_textures=cfg.motion_textures)
    sampler = StepBatchSampler(cfg, start_step, dist)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers,
                        pin_memory=device.type == "cuda", persistent_workers=cfg.workers > 0,
                        prefetch_factor=4 if cfg.workers > 0 else None)
    return loader, len(videos)


class _Checkpointer:
    """Rank 0 saves weights, optimizer, average and ``config.json`` with the step, loss and training time."""

    def __init__(self, dist: Distributed, run: TrainingRun) -> None:
        self.dist, self.run, self.state, self.t0 = dist, run, run.state, time.time()

    def save(self, step: int, loss: float, monitor: Monitor) -> None:
        run, last_val = self.run, monitor.last_val
        self.state = {**config_to_dict(run.model_cfg, run.cfg), "step": step, "loss": loss,
                      "world_size": self.dist.world_size,
                      "elapsed_s": self.state.get("elapsed_s", 0.0) + time.time() - self.t0,
                      **({"val": last_val} if last_val else {}),
                      **({"grad_scaler": run.scaler.state_dict()} if run.scaler.is_enabled() else {})}
        self.t0 = time.time()
        average = run.average
        save_checkpoint(run.cfg.out, run.model, run.optimizer, run.model_cfg, self.state,
                        average.model if average is not None else None)
        monitor.writer.flush()
