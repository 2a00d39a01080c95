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

import gc
import json
import logging
import math
import os
import pickle
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from .augment import Augmentation
from .checkpoint import (
    CONFIG,
    CheckpointError,
    load_model,
    load_training_state,
    read_model_info,
    recover_checkpoint,
    save_checkpoint,
    unwrap,
)
from .config import TrainConfig, config_to_dict, train_config_from_dict, validate_train_config
from .data import BlendDataset, ClipSpec, from_model
from .ema import WeightAverage
from .errors import CentrifugeError
from .locks import hold_folder
from .losses import compiled_pit_loss, pit_loss
from .model import ModelConfig, build_model
from .perf import count_flops, measure_peak_flops
from .training_step import (
    autocast,
    compile_for_training,
    keep_freed_memory,
    optimizer_options,
    training_memory_format,
)

if TYPE_CHECKING:
    from .synth import PhotoSynth

log = logging.getLogger("centrifuge")

#: How long a collective (or the rendezvous) may wait for the other ranks before it fails. It bounds the
#: time a rank can hang when another one died outside torchrun (torchrun itself stops the others at once).
DIST_TIMEOUT = timedelta(minutes=30)

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

T = TypeVar("T")


@dataclass
class Distributed:
    """Process-group facts read from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

    ``enabled`` is True when there is more than one rank; a single rank (plain ``python``, or ``torchrun``
    with one process) trains without a process group.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False
    backend: str = ""

    @classmethod
    def from_env(cls, device: str) -> Distributed:
        """Join the process group torchrun describes (``device``: the ``--device`` flag); else one process."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if "RANK" not in os.environ or world_size <= 1:
            return cls()
        d = cls(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")), True)
        if device not in ("auto", "cuda", "cpu"):
            raise ValueError(f"--device {device} under torchrun: use auto, cuda or cpu "
                             "(each rank takes the GPU of its LOCAL_RANK)")
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if use_cuda:
            if not torch.cuda.is_available():
                raise ValueError("--device cuda, but CUDA is not available")
            if d.local_rank >= torch.cuda.device_count():
                raise ValueError(f"LOCAL_RANK {d.local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
                                 "start at most one process per GPU (--nproc_per_node)")
            torch.cuda.set_device(d.local_rank)
        d.backend = "nccl" if use_cuda else "gloo"
        if not torch_dist.is_initialized():
            torch_dist.init_process_group(backend=d.backend, timeout=DIST_TIMEOUT)
        return d

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        if self.enabled and torch_dist.is_initialized():
            # Free the DDP reducer (held in reference cycles) before its process group goes away: destroyed
            # afterwards, at interpreter exit, it can abort the process ("terminate called without an active
            # exception") after a successful run.
            gc.collect()
            torch_dist.destroy_process_group()


def pick_device(name: str, dist: Distributed | None = None) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and dist is not None and dist.enabled:
        return torch.device("cuda", dist.local_rank)
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise CentrifugeError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CentrifugeError("--device cuda was asked for but no CUDA GPU is available")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype. ``auto``: bf16 on GPUs that have it and on CPUs with AMX-BF16 (a cpu-small
    training step is 1.3x faster there), fp32 (None) elsewhere, where bf16 is emulated and slow."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        from .inference import cpu_has_fast_bf16

        return torch.bfloat16 if device.type == "cpu" and cpu_has_fast_bf16() else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def check_cpu_bf16_training(amp: torch.dtype | None, device: torch.device) -> None:
    """Refuse bf16 training on a CPU without AMX: there oneDNN's bf16 convolution weight gradients are wrong
    whenever a 3x3x3 kernel spans more frames than the clip has left (2 frames at Mixed_5c of a 16-frame
    clip: off by more than the gradient itself on an AVX512-BF16 Xeon; docs/performance.md), and bf16 is
    slower than fp32 there anyway."""
    from .inference import cpu_has_fast_bf16

    if device.type == "cpu" and amp == torch.bfloat16 and not cpu_has_fast_bf16():
        raise ValueError("--precision bf16 trains only on CPUs with AMX: on this one oneDNN's bf16 weight "
                         "gradients are wrong for short clips, and bf16 is slower than fp32; use fp32 or auto")


def split_batch(batch_size: int, world_size: int, micro_batch: int | None) -> tuple[int, int, int]:
    """``(per-rank batch, micro-batch, accumulation steps)`` for a global batch over ``world_size`` ranks."""
    if batch_size < 1 or batch_size % world_size:
        raise ValueError(f"batch size {batch_size} is not divisible by {world_size} ranks; "
                         f"choose a multiple of {world_size} (--batch-size) or another number of ranks")
    local = batch_size // world_size
    micro = min(micro_batch or local, local)
    if micro < 1 or local % micro:
        raise ValueError(f"per-rank batch {local} (= {batch_size} / {world_size} ranks) is not divisible by "
                         f"micro-batch {micro}")
    return local, micro, local // micro


class StepBatchSampler(Sampler[list[int]]):
    """Yields this rank's micro-batches of dataset indices, step after step, from ``start_step``."""

    def __init__(self, cfg: TrainConfig, start_step: int, dist: Distributed) -> None:
        self.local, self.micro, self.accum = split_batch(cfg.batch_size, dist.world_size, cfg.micro_batch)
        self.cfg, self.start, self.rank = cfg, start_step, dist.rank

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.cfg.iterations):
            first = step * self.cfg.batch_size + self.rank * self.local
            for m in range(0, self.local, self.micro):
                yield list(range(first + m, first + m + self.micro))

    def __len__(self) -> int:
        return max(0, self.cfg.iterations - self.start) * self.accum


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


def training_videos(cfg: TrainConfig) -> list[Path]:
    """The list of training videos: folders/files in ``cfg.data``, a Kinetics CSV, or a saved file list."""
    from .data import load_kinetics, read_file_list

    if cfg.kinetics_csv:
        root = cfg.data[0] if cfg.data else str(Path(cfg.kinetics_csv).parent)
        entries, _ = load_kinetics(cfg.kinetics_csv, root, split=cfg.kinetics_split)  # warns of missing files
        return [e.path for e in entries if e.path is not None]
    if cfg.file_list:
        return [Path(p) for p in read_file_list(cfg.file_list)]
    return video_files(cfg.data)


def photo_synth(cfg: TrainConfig) -> PhotoSynth | None:
    """The renderer of training clips from ``cfg.photos`` (and ``cfg.cutouts``); None without photos."""
    if not cfg.photos:
        return None
    from .synth import PhotoSynth, SynthConfig

    synth = SynthConfig(flow=cfg.synth_motion, parallax=cfg.synth_motion)
    return PhotoSynth(cfg.photos, cfg.cutouts, seed=cfg.seed, cfg=synth)


def video_files(items: list[str]) -> list[Path]:
    """Files as given, folders expanded (recursively) into their videos."""
    from .data import list_videos

    paths: list[Path] = []
    for item in items:
        p = Path(item)
        paths.extend(list_videos(p) if p.is_dir() else [p])
    return paths


def read_run_config(run_dir: str | Path) -> tuple[ModelConfig, TrainConfig, dict[str, Any]]:
    """The model and training configs and the saved state (``step``, ``loss``...) of a run folder."""
    path = Path(run_dir) / CONFIG
    try:
        state = json.loads(path.read_text())
        return ModelConfig.from_dict(state["model"]), train_config_from_dict(state["train"]), state
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"cannot resume from {run_dir}: unreadable {CONFIG} ({e})") from e


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


def _on_rank0(dist: Distributed, fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and hand its result to every rank; its exception is raised on every rank."""
    result: Any = None
    error: BaseException | None = None
    if dist.is_main:
        try:
            result = fn()
        except Exception as e:  # sent to the other ranks, so that all of them stop with the same error
            error = e
    if dist.enabled:
        if error is not None:
            try:
                pickle.dumps(error)
            except Exception:
                error = RuntimeError(f"{type(error).__name__}: {error}")
        box = [(result, error)]
        torch_dist.broadcast_object_list(box, src=0)
        if not dist.is_main:
            result, error = box[0]
    if error is not None:
        raise error
    return result


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


def _log_images(writer: Any, step: int, mix: torch.Tensor, layers: torch.Tensor, out: torch.Tensor) -> None:
    """Middle frame of the first clip: blend | targets | output layers, as one image row."""
    t = mix.shape[2] // 2
    row = [mix[0, :, t]] + [layers[0, i, :, t] for i in range(layers.shape[1])]
    row += [out[0, i, :, t].float().clamp(-1, 1) for i in range(out.shape[1])]
    img = from_model(torch.cat(row, dim=-1).unsqueeze(1).detach().cpu())[0]  # [H, W, 3]
    writer.add_image("blend|targets|outputs", img, step, dataformats="HWC")


def _training_flops(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> float:
    """FLOPs of one training clip (forward + backward ~ 3x forward), counted without touching BN statistics."""
    bare = unwrap(model)
    bare.eval()  # a forward in train mode would update BatchNorm's running averages
    try:
        with torch.no_grad():
            x = torch.zeros(1, 3, cfg.frames, cfg.size, cfg.size, device=device)
            return 3.0 * count_flops(bare, x)
    finally:
        bare.train()


class Validator:
    """Held-out validation during training: the PIT loss of the model against the identity's on fixed pairs.

    The clips (``cfg.frames`` x ``cfg.size``, the training geometry, centre windows) are decoded once; pairs
    are all pairs of ``cfg.val_data``'s videos, or ``cfg.val_pairs`` seeded ones. Rank 0 only.
    """

    def __init__(self, cfg: TrainConfig, device: torch.device, amp: torch.dtype | None) -> None:
        from .data import all_pairs
        from .evaluate import load_clips

        paths = video_files(cfg.val_data)
        if len(paths) < 2:
            raise ValueError(f"--val-data needs at least 2 videos, found {len(paths)}")
        self.clips = load_clips(paths, cfg.frames, cfg.size)
        self.pairs = all_pairs(len(paths), cfg.val_pairs or None, cfg.seed)
        self.device, self.amp = device, amp

    def __call__(self, model: torch.nn.Module) -> dict[str, Any]:
        from .evaluate import evaluate_clips

        was_training = model.training  # the trained model goes back to training; a weight average stays in eval
        model.eval()  # BatchNorm running averages, as at evaluation
        try:
            with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                return evaluate_clips(model, self.clips, self.pairs, device=self.device)
        finally:
            model.train(was_training)


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
    monitor = _Monitor(dist, run, n_videos, progress, cleanup) if dist.is_main else None
    saver = _Checkpointer(dist, run)  # its clock (the run's training time) starts here
    batches = iter(loader)
    step = run.start_step
    while step < cfg.iterations:
        step_loss, last_batch = _train_step(run, dist, batches, step)
        step += 1
        if monitor is not None:  # rank 0 logs, validates and saves
            monitor.after_step(step, step_loss, last_batch)
            if step % cfg.ckpt_every == 0 or step == cfg.iterations:
                saver.save(step, monitor.checkpoint_loss(step, step_loss), monitor)
    if dist.enabled:
        torch_dist.barrier()  # no rank leaves (and tears the group down) before rank 0 has saved
    return saver.state or {"step": step, **config_to_dict(model_cfg, cfg)}


@dataclass
class _Run:
    """What the training loop works on, as :func:`_set_up` leaves it."""

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


def _set_up(dist: Distributed, model_cfg: ModelConfig, cfg: TrainConfig, resume: bool) -> _Run:
    """Configs (a resumed run's own), the model on its device, optimizer, weight average, loss scaler, DDP."""
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

    # Rank 0's configs (and checkpoint) hold for every rank, whatever the others were given.
    ckpt = _on_rank0(dist, restore) if resume else None
    start_step, state = 0, {}
    if ckpt is not None:
        model_cfg, cfg, state = ckpt["model_cfg"], ckpt["cfg"], ckpt["state"]
        start_step = int(state["step"])
    else:
        model_cfg, cfg = _on_rank0(dist, lambda: (model_cfg, cfg))
    init_weights, init_path = None, None
    if ckpt is None and cfg.init:
        # Fine-tuning: the architecture comes with the weights. Rank 0 reads them; DDP hands them to the others.
        init_path = None if cfg.init == "default" else cfg.init
        model_cfg = _on_rank0(dist, lambda: read_model_info(init_path)[0])
    check_layers_for_blends(model_cfg, cfg)
    if ckpt is None and cfg.init and dist.is_main:
        init_weights = load_model(init_path)[0].state_dict()
        log.info("starting from the weights of %s", cfg.init)

    device = pick_device(cfg.device, dist)
    amp = autocast_dtype(cfg.precision, device)
    check_cpu_bf16_training(amp, device)  # before any model is built
    if device.type == "cpu":
        keep_freed_memory()
    _, micro, accum = split_batch(cfg.batch_size, dist.world_size, cfg.micro_batch)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_model(model_cfg).to(device)
    check_training_memory(model, cfg, micro, device, amp)
    memory_format = training_memory_format(device)
    model.to(memory_format=memory_format)
    if cfg.sync_bn and dist.enabled:
        if device.type == "cpu":
            raise ValueError("--sync-bn needs GPUs: torch's SyncBatchNorm does not run on CPU tensors")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if init_weights is not None:
        model.load_state_dict(init_weights)
        del init_weights
    optimizer = make_optimizer(model, cfg, device)
    # The ranks hold the same weights: one average, on the rank that saves it. It starts from the weights of
    # --init (loaded above) or, on resume, from the checkpoint's average (a resumed run keeps its --ema).
    average = WeightAverage(model, cfg.ema) if cfg.ema and dist.is_main else None
    if ckpt is not None:
        model.load_state_dict(ckpt["weights"])
        optimizer.load_state_dict(ckpt["optimizer"])
        for group in optimizer.param_groups:  # this machine's implementation, not the checkpoint writer's
            group.update(optimizer_options(device))
        if average is not None:
            average.model.load_state_dict(ckpt["average"])
        del ckpt
        if dist.is_main:
            log.info("resuming %s at step %d", out, start_step)
    # Nothing in the model draws random numbers today; anything that does (dropout) should differ per rank.
    torch.manual_seed(cfg.seed + 1_000_003 * (dist.rank + 1))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    if scaler.is_enabled() and state.get("grad_scaler"):
        scaler.load_state_dict(state["grad_scaler"])  # fp16 loss scale and its growth counter, for exact resume
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if dist.enabled else model
    layers_shape = (micro, cfg.videos_per_blend, 3, cfg.frames, cfg.size, cfg.size)
    loss_fn = compiled_pit_loss(model_cfg.n_layers, layers_shape, device) if cfg.compile_loss else pit_loss
    model.train()
    net = ddp
    if cfg.compile:
        # Compiled now, on a batch of the training's shape, so that the time is paid (and reported) once.
        mix = torch.zeros(layers_shape[:1] + layers_shape[2:], device=device).to(memory_format=memory_format)
        net, seconds = compile_for_training(ddp, model, mix, torch.zeros(layers_shape, device=device), loss_fn, amp)
        if net is not ddp and dist.is_main:
            log.info("compiled the model for training in %.1f s", seconds)
    return _Run(model_cfg, cfg, device, model, ddp, net, loss_fn, optimizer, scaler, average, amp, memory_format,
                micro, accum, start_step, state)


def _make_loader(cfg: TrainConfig, start_step: int, dist: Distributed, device: torch.device) -> tuple[DataLoader, int]:
    """The training blends from ``start_step`` on, this rank's share; and the number of training videos."""
    # Rank 0 lists the videos for everyone: one scan of the file system, and the same list on every rank
    # (the list decides which videos each dataset index blends).
    videos = _on_rank0(dist, lambda: [str(p) for p in training_videos(cfg)])
    if len(videos) < cfg.videos_per_blend and not cfg.photos:
        raise ValueError(f"need at least {cfg.videos_per_blend} training videos, found {len(videos)}")
    synth = photo_synth(cfg)
    spec = ClipSpec(frames=cfg.frames, size=cfg.size, train=True, resize_factor=cfg.resize_factor,
                    augment=Augmentation() if cfg.augment else None)
    dataset = BlendDataset(videos, spec, k=cfg.videos_per_blend, alpha=cfg.alpha, alpha_range=cfg.alpha_range,
                           frozen=cfg.frozen, preload=cfg.preload, seed=cfg.seed,
                           length=cfg.iterations * cfg.batch_size, synth=synth, photo_fraction=cfg.photo_fraction)
    sampler = StepBatchSampler(cfg, start_step, dist)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers,
                        pin_memory=device.type == "cuda", persistent_workers=cfg.workers > 0,
                        prefetch_factor=4 if cfg.workers > 0 else None)
    return loader, len(videos)


def _train_step(run: _Run, dist: Distributed, batches: Iterator[dict[str, torch.Tensor]],
                step: int) -> tuple[float, tuple[torch.Tensor, ...]]:
    """One update from ``run.accum`` micro-batches of ``batches``: the global batch's loss and the last
    micro-batch's ``(mix, layers, outputs)``."""
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
            loss = run.loss_fn(outputs.float(), layers)[0].mean()
            run.scaler.scale(loss / run.accum).backward()
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
    return step_loss, (mix, layers, outputs)


class _Monitor:
    """Rank 0's view of the run: progress bar, loss and MFU log lines, TensorBoard, validation, images."""

    def __init__(self, dist: Distributed, run: _Run, n_videos: int, progress: bool, cleanup: ExitStack) -> None:
        from torch.utils.tensorboard import SummaryWriter

        cfg, out = run.cfg, Path(run.cfg.out)
        self.run, self.cfg, self.world_size = run, cfg, dist.world_size
        # Hide what an earlier attempt logged after the checkpoint we start from (all of it when not resuming);
        # events are logged at the number of updates done, so step ``start_step`` itself stays.
        self.writer = cleanup.enter_context(SummaryWriter(str(out / "tb"), purge_step=run.start_step + 1))
        self.flops_per_clip = _training_flops(run.model, cfg, run.device)
        self.peak = measure_peak_flops(run.device, run.amp or torch.float32, seconds=0.3)
        log.info("%s: %d videos, %.1f M parameters, %.2f GFLOP per training clip, peak %.0f GFLOP/s per device",
                 out, n_videos, sum(p.numel() for p in run.model.parameters()) / 1e6, self.flops_per_clip / 1e9,
                 self.peak / 1e9)
        log.info("%d rank(s)%s on %s: global batch %d = %d rank(s) x %d clips (micro-batch %d x %d accumulation)"
                 "%s", dist.world_size, f" ({dist.backend})" if dist.enabled else "", run.device.type,
                 cfg.batch_size, dist.world_size, cfg.batch_size // dist.world_size, run.micro, run.accum,
                 ", SyncBatchNorm" if cfg.sync_bn and dist.enabled else "")
        self.validate = Validator(cfg, run.device, run.amp) if cfg.val_every and cfg.val_data else None
        self.last_val: dict[str, Any] = {}
        self.bar = None
        if progress and run.start_step < cfg.iterations:
            from tqdm import tqdm

            self.bar = cleanup.enter_context(tqdm(total=cfg.iterations, initial=run.start_step, unit="it",
                                                  dynamic_ncols=True))
        self.window_loss, self.last_t, self.last_step = 0.0, time.time(), run.start_step
        self.mean_loss = math.nan

    def write(self, msg: str) -> None:
        (self.bar.write if self.bar is not None else log.info)(msg)

    def after_step(self, step: int, step_loss: float, last_batch: tuple[torch.Tensor, ...]) -> None:
        """Progress, and at their intervals the log line, validation and images, after update ``step``."""
        cfg, lr = self.cfg, self.run.optimizer.param_groups[0]["lr"]  # the lr of this step
        self.window_loss += step_loss
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.3g}")
        if step % cfg.log_every == 0 or step == cfg.iterations:
            now = time.time()
            clips_s = (step - self.last_step) * cfg.batch_size / max(now - self.last_t, 1e-9)
            mfu = clips_s * self.flops_per_clip / self.peak / self.world_size
            self.mean_loss = self.window_loss / (step - self.last_step)  # what checkpoints record: one batch is noisy
            self.writer.add_scalar("train/loss", self.mean_loss, step)
            self.writer.add_scalar("train/lr", lr, step)
            self.writer.add_scalar("perf/clips_per_s", clips_s, step)
            self.writer.add_scalar("perf/mfu", mfu, step)
            self.write(f"step {step}: loss {self.mean_loss:.4f}, {clips_s:.2f} clips/s, MFU {100 * mfu:.1f}%")
            self.last_t, self.last_step, self.window_loss = now, step, 0.0
        if self.validate is not None and (step % cfg.val_every == 0 or step == cfg.iterations):
            average = self.run.average
            v = self.validate(average.model if average is not None else unwrap(self.run.model))
            for key in ("model_loss", "identity_loss", "ratio", "psnr_db", "identity_psnr_db"):
                self.writer.add_scalar(f"val/{key}", v[key], step)
            self.write(f"step {step}: validation loss {v['model_loss']:.4f} = {v['ratio']:.3f} x identity, "
                       f"PSNR {v['psnr_db']:.2f} dB (identity {v['identity_psnr_db']:.2f}), {v['pairs']} pairs")
            self.last_val = {k: v[k] for k in ("model_loss", "ratio", "psnr_db", "pairs")}
        if cfg.image_every and step % cfg.image_every == 0:
            _log_images(self.writer, step, *last_batch)

    def checkpoint_loss(self, step: int, step_loss: float) -> float:
        """The loss a checkpoint at ``step`` records: the mean of the log window ending there, else the step's."""
        return self.mean_loss if self.last_step == step else step_loss


class _Checkpointer:
    """Rank 0 saves weights, optimizer, average and ``config.json`` with the step, loss and training time."""

    def __init__(self, dist: Distributed, run: _Run) -> None:
        self.dist, self.run, self.state, self.t0 = dist, run, run.state, time.time()

    def save(self, step: int, loss: float, monitor: _Monitor) -> None:
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
