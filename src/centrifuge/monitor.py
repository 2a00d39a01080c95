"""Watching a training run (rank 0): progress, loss and MFU log lines, TensorBoard, held-out validation, images."""

from __future__ import annotations

import logging
import math
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from .checkpoint import unwrap
from .config import TrainConfig
from .data import all_pairs
from .distributed import Distributed
from .evaluate import evaluate_clips, load_clips
from .frames import from_model
from .perf import count_flops, measure_peak_flops
from .sources import video_files
from .training_step import TrainingRun

__all__ = ["Validator", "Monitor"]

log = logging.getLogger("centrifuge")


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
        paths = video_files(cfg.val_data)
        if len(paths) < 2:
            raise ValueError(f"--val-data needs at least 2 videos, found {len(paths)}")
        self.clips = load_clips(paths, cfg.frames, cfg.size)
        self.pairs = all_pairs(len(paths), cfg.val_pairs or None, cfg.seed)
        self.device, self.amp = device, amp

    def __call__(self, model: torch.nn.Module) -> dict[str, Any]:
        was_training = model.training  # the trained model goes back to training; a weight average stays in eval
        model.eval()  # BatchNorm running averages, as at evaluation
        try:
            with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                # the tone oracle does not change from one validation to the next: not recomputed each time
                return evaluate_clips(model, self.clips, self.pairs, device=self.device, with_tone_oracle=False)
        finally:
            model.train(was_training)


class Monitor:
    """Rank 0's view of the run: progress bar, loss and MFU log lines, TensorBoard, validation, images."""

    def __init__(self, dist: Distributed, run: TrainingRun, n_videos: int, progress: bool, cleanup: ExitStack) -> None:
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
            for key in ("model_loss", "identity_loss", "ratio", "psnr_db", "identity_psnr_db", "median_ratio",
                        "gradient_correlation"):
                self.writer.add_scalar(f"val/{key}", v[key], step)
            self.writer.add_scalar("val/worst_ratio", v["worst"]["ratio"], step)
            self.write(f"step {step}: validation loss {v['model_loss']:.4f} = {v['ratio']:.3f} x identity (median "
                       f"{v['median_ratio']:.3f}, worst {v['worst']['ratio']:.3f}), PSNR {v['psnr_db']:.2f} dB "
                       f"(identity {v['identity_psnr_db']:.2f}), gradient correlation {v['gradient_correlation']:.2f}, "
                       f"{v['pairs']} pairs")
            self.last_val = {k: v[k] for k in ("model_loss", "ratio", "psnr_db", "pairs")}
        if cfg.image_every and step % cfg.image_every == 0:
            _log_images(self.writer, step, *last_batch)

    def checkpoint_loss(self, step: int, step_loss: float) -> float:
        """The loss a checkpoint at ``step`` records: the mean of the log window ending there, else the step's."""
        return self.mean_loss if self.last_step == step else step_loss


