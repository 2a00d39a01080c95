"""Training (Sec. 4.1): SGD on blended pairs with the permutation-invariant loss.

One process, or one process per device under ``torchrun`` (DDP straight from its environment variables).
Batches are a pure function of the step: item ``i`` of the global batch at step ``s`` is dataset index
``s * batch_size + i``, and rank ``r`` takes its slice of it. So a resumed run sees exactly the batches an
uninterrupted run would, and N ranks see the same global batch as one process.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from .checkpoint import CONFIG, load_training_state, save_checkpoint, unwrap
from .config import TrainConfig, config_to_dict, train_config_from_dict
from .data import BlendDataset, ClipSpec, from_model
from .losses import pit_loss
from .model import ModelConfig, build_model
from .perf import count_flops, measure_peak_flops

log = logging.getLogger("centrifuge")


@dataclass
class Distributed:
    """Process-group facts read from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @classmethod
    def from_env(cls, device: str) -> Distributed:
        if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 1:
            return cls()
        d = cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)), True)
        use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
        if use_cuda:
            torch.cuda.set_device(d.local_rank)
        if not torch_dist.is_initialized():
            torch_dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return d

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str, dist: Distributed | None = None) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and dist is not None and dist.enabled:
        return torch.device("cuda", dist.local_rank)
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype: bf16 on GPUs that have it when ``auto``; fp32 (None) on CPU unless asked."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class StepBatchSampler(Sampler[list[int]]):
    """Yields this rank's micro-batches of dataset indices, step after step, from ``start_step``."""

    def __init__(self, cfg: TrainConfig, start_step: int, dist: Distributed) -> None:
        if cfg.batch_size % dist.world_size:
            raise ValueError(f"batch size {cfg.batch_size} is not divisible by {dist.world_size} ranks")
        self.local = cfg.batch_size // dist.world_size
        self.micro = min(cfg.micro_batch or self.local, self.local)
        if self.local % self.micro:
            raise ValueError(f"per-rank batch {self.local} is not divisible by micro-batch {self.micro}")
        self.cfg, self.start, self.rank = cfg, start_step, dist.rank

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.cfg.iterations):
            first = step * self.cfg.batch_size + self.rank * self.local
            for m in range(0, self.local, self.micro):
                yield list(range(first + m, first + m + self.micro))

    def __len__(self) -> int:
        return (self.cfg.iterations - self.start) * (self.local // self.micro)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r} (sgd or adamw)")


def training_videos(cfg: TrainConfig) -> list[Path]:
    """The list of training videos: folders/files in ``cfg.data``, a Kinetics CSV, or a saved file list."""
    from .data import list_videos, load_kinetics, read_file_list

    if cfg.kinetics_csv:
        root = cfg.data[0] if cfg.data else str(Path(cfg.kinetics_csv).parent)
        entries, _ = load_kinetics(cfg.kinetics_csv, root, split=cfg.kinetics_split)  # warns of missing files
        return [e.path for e in entries if e.path is not None]
    if cfg.file_list:
        return [Path(p) for p in read_file_list(cfg.file_list)]
    paths: list[Path] = []
    for item in cfg.data:
        p = Path(item)
        paths.extend(list_videos(p) if p.is_dir() else [p])
    return paths


def _log_images(writer: Any, step: int, mix: torch.Tensor, layers: torch.Tensor, out: torch.Tensor) -> None:
    """Middle frame of the first clip: blend | targets | output layers, as one image row."""
    t = mix.shape[2] // 2
    row = [mix[0, :, t]] + [layers[0, i, :, t] for i in range(layers.shape[1])]
    row += [out[0, i, :, t].float().clamp(-1, 1) for i in range(out.shape[1])]
    img = from_model(torch.cat(row, dim=-1).unsqueeze(1).detach().cpu())[0]  # [H, W, 3]
    writer.add_image("blend|targets|outputs", img, step, dataformats="HWC")


def train(model_cfg: ModelConfig, cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train a model; returns the final ``config.json`` state (step, loss, timings)."""
    dist = Distributed.from_env(cfg.device)
    out = Path(cfg.out)
    try:
        start_step, state = 0, {}
        if resume and (out / CONFIG).exists():
            saved = json.loads((out / CONFIG).read_text())
            model_cfg = ModelConfig.from_dict(saved["model"])
            iterations = cfg.iterations
            cfg = train_config_from_dict(saved["train"])
            cfg.iterations = max(iterations, cfg.iterations)
        device = pick_device(cfg.device, dist)
        torch.manual_seed(cfg.seed)
        model = build_model(model_cfg).to(device)
        if cfg.sync_bn and dist.enabled:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        optimizer = make_optimizer(model, cfg)
        if resume and (out / CONFIG).exists():
            state = load_training_state(out, model, optimizer)
            start_step = int(state["step"])
            if dist.is_main:
                log.info("resuming %s at step %d", out, start_step)
        amp = autocast_dtype(cfg.precision, device)
        scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
            if dist.enabled else model
        net = torch.compile(ddp) if cfg.compile else ddp

        videos = training_videos(cfg)
        if len(videos) < cfg.videos_per_blend:
            raise ValueError(f"need at least {cfg.videos_per_blend} training videos, found {len(videos)}")
        spec = ClipSpec(frames=cfg.frames, size=cfg.size, train=True, resize_factor=cfg.resize_factor)
        dataset = BlendDataset(videos, spec, k=cfg.videos_per_blend, alpha=cfg.alpha, alpha_range=cfg.alpha_range,
                               frozen=cfg.frozen, preload=cfg.preload, seed=cfg.seed,
                               length=cfg.iterations * cfg.batch_size)
        sampler = StepBatchSampler(cfg, start_step, dist)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers,
                            pin_memory=device.type == "cuda", persistent_workers=cfg.workers > 0,
                            prefetch_factor=4 if cfg.workers > 0 else None)
        accum = sampler.local // sampler.micro

        writer = None
        if dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"))
            x = torch.zeros(1, 3, cfg.frames, cfg.size, cfg.size, device=device)
            flops_per_clip = 3 * count_flops(unwrap(model), x)  # forward + backward ~ 3x forward
            peak = measure_peak_flops(device, amp or torch.float32, seconds=0.3)
            log.info("%s: %d videos, %.1f M parameters, %.2f GFLOP per training clip, peak %.0f GFLOP/s",
                     out, len(videos), sum(p.numel() for p in model.parameters()) / 1e6, flops_per_clip / 1e9,
                     peak / 1e9)

        model.train()
        bar = None
        if dist.is_main and progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.iterations, initial=start_step, unit="it", dynamic_ncols=True)
        step, micro, loss_acc, t0, last_t, last_step = start_step, 0, 0.0, time.time(), time.time(), start_step
        for batch in loader:
            mix = batch["mix"].to(device, non_blocking=True)
            layers = batch["layers"].to(device, non_blocking=True)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr_at(step)
            last_micro = micro == accum - 1
            sync = nullcontext() if (last_micro or not dist.enabled) else ddp.no_sync()
            with sync, torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                outputs = net(mix)
                loss = pit_loss(outputs.float(), layers)[0].mean()
                scaler.scale(loss / accum).backward()
            loss_acc += loss.item() / accum
            micro += 1
            if not last_micro:
                continue
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if not math.isfinite(loss_acc):
                raise FloatingPointError(f"loss is {loss_acc} at step {step}; lower the learning rate")
            step += 1
            if dist.is_main:
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_acc:.4f}", lr=f"{cfg.lr_at(step - 1):.3g}")
                if step % cfg.log_every == 0 or step == cfg.iterations:
                    now = time.time()
                    clips_s = (step - last_step) * cfg.batch_size / max(now - last_t, 1e-9)
                    mfu = clips_s * flops_per_clip / peak / dist.world_size
                    writer.add_scalar("train/loss", loss_acc, step)
                    writer.add_scalar("train/lr", cfg.lr_at(step - 1), step)
                    writer.add_scalar("perf/clips_per_s", clips_s, step)
                    writer.add_scalar("perf/mfu", mfu, step)
                    msg = f"step {step}: loss {loss_acc:.4f}, {clips_s:.2f} clips/s, MFU {100 * mfu:.1f}%"
                    (bar.write if bar is not None else log.info)(msg)
                    last_t, last_step = now, step
                if cfg.image_every and step % cfg.image_every == 0:
                    _log_images(writer, step, mix, layers, outputs)
                if step % cfg.ckpt_every == 0 or step == cfg.iterations:
                    state = {**config_to_dict(model_cfg, cfg), "step": step, "loss": loss_acc,
                             "elapsed_s": state.get("elapsed_s", 0.0) + time.time() - t0}
                    t0 = time.time()
                    save_checkpoint(out, model, optimizer, model_cfg, state)
            micro, loss_acc = 0, 0.0
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        if dist.enabled:
            torch_dist.barrier()
        return state or {"step": step, **config_to_dict(model_cfg, cfg), "train": asdict(cfg)}
    finally:
        if dist.enabled and torch_dist.is_initialized():
            torch_dist.destroy_process_group()
