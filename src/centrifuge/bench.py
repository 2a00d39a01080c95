"""Speed measurements behind ``centrifuge bench``: inference, training step and data loading.

Every time is the median of ``repeats`` runs after ``warmup`` untimed ones. FLOPs are counted on the meta
device (shapes only, nothing is computed) with :func:`centrifuge.perf.count_flops`; one multiply-add is 2
FLOPs. "Peak" is the machine's measured large-matrix-product rate in the same precision
(:func:`centrifuge.perf.measure_peak_flops`), so ``fraction_of_peak`` says how well the network's
convolutions use the hardware, not how close it is to a datasheet.
"""

from __future__ import annotations

import itertools
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import TrainConfig
from .devices import autocast_dtype, resolve_precision
from .distributed import Distributed
from .inference import fold_batch_norm, prepare_for_inference
from .model import ModelConfig, Predictor, PredictorCorrector, build_model
from .perf import count_flops, measure_peak_flops
from .training_step import keep_freed_memory, make_optimizer, new_run, train_step

__all__ = [
    "BenchSettings",
    "time_call",
    "predictor_parts",
    "bench_inference",
    "bench_training",
    "bench_data",
    "machine_info",
    "run_bench",
    "format_report",
]


@dataclass
class BenchSettings:
    """What to measure; see ``centrifuge bench --help``."""

    model: ModelConfig
    frames: int = 32
    size: int = 112
    batch: int = 1
    device: str = "cpu"
    precision: str = "auto"
    compile: bool = False
    channels_last: bool = True
    fuse: bool = True
    cpu_kernels: bool = True
    repeats: int = 5
    warmup: int = 1
    inference: bool = True
    split: bool = True
    train: bool = False
    compile_loss: bool = True
    train_compile: bool = False
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    train_batch: int | None = None
    data: str | None = None
    photos: Sequence[str] = ()  # blends rendered from photos (with the videos of ``data``, half and half)
    cutouts: Sequence[str] = ()
    workers: Sequence[int] = (0,)
    data_batches: int = 10
    data_batch: int | None = None
    peak_size: int | None = None
    peak_seconds: float = 1.0
    profile: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        d["workers"] = list(self.workers)
        return d


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], repeats: int, warmup: int = 1,
              device: torch.device | str = "cpu") -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls (device synchronised)."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def predictor_parts(model: nn.Module) -> list[tuple[str, Predictor]]:
    """The encoder-decoder networks a model runs, in order: ``[("predictor", p)]`` plus its correctors."""
    if isinstance(model, Predictor):
        return [("predictor", model)]
    if isinstance(model, PredictorCorrector):
        return [("predictor", model.predictor)] + [(f"corrector_{i}", c) for i, c in enumerate(model.correctors)]
    raise TypeError(f"expected a Predictor or PredictorCorrector, got {type(model).__name__}")


def _meta_model(cfg: ModelConfig) -> nn.Module:
    """The model on the meta device, for counting FLOPs. BatchNorm is folded away: the counter does not count
    it, and its meta implementation is slow. Built on the CPU and moved: initialising weights directly on the
    meta device is slower still."""
    model = build_model(cfg).to("meta")
    fold_batch_norm(model)
    return model


def _split_flops(cfg: ModelConfig, batch: int, frames: int, size: int) -> dict[str, int]:
    """Forward FLOPs of every encoder and decoder of the model (meta device)."""
    flops: dict[str, int] = {}
    for name, part in predictor_parts(_meta_model(cfg)):
        x = torch.zeros(batch, part.in_channels, frames, size, size, device="meta")
        with FlopCounterMode(display=False) as counter:
            feats = part.encoder(x)
        flops[f"{name}.encoder"] = int(counter.get_total_flops())
        with FlopCounterMode(display=False) as counter:
            part.decoder(feats, x)
        flops[f"{name}.decoder"] = int(counter.get_total_flops())
    return flops


def _median(times: list[float]) -> float:
    return statistics.median(times)


def bench_inference(s: BenchSettings) -> dict[str, Any]:
    """Per-clip forward time, FLOPs, achieved and peak FLOP/s, and the encoder/decoder split."""
    device = torch.device(s.device)
    dtype = resolve_precision(s.precision, device)
    torch.manual_seed(0)
    model = build_model(s.model)
    fast = prepare_for_inference(model, device, s.precision, channels_last=s.channels_last, compile=s.compile,
                                 fuse=s.fuse, cpu_kernels=s.cpu_kernels, inplace=True)
    x = fast.convert_input(torch.rand(s.batch, 3, s.frames, s.size, s.size) * 2 - 1)
    with fast.context():
        times = time_call(lambda: fast.compiled(x), s.repeats, s.warmup, device)
    flops = count_flops(_meta_model(s.model), torch.zeros(s.batch, 3, s.frames, s.size, s.size, device="meta"))
    seconds = _median(times) / s.batch
    result: dict[str, Any] = {
        "seconds_per_clip": seconds,
        "seconds_per_batch_all": times,
        "gflop_per_clip": flops / s.batch / 1e9,
        "achieved_gflops": flops / s.batch / seconds / 1e9,
        "dtype": str(dtype).removeprefix("torch."),
    }
    if s.profile:
        result["profile"] = _profile(lambda: fast.compiled(x), fast, s.profile)
    if s.split:
        result["split"] = _bench_split(fast.module, fast, s)
        for kind in ("encoder", "decoder"):
            result[f"{kind}_seconds_per_clip"] = sum(v["seconds_per_clip"] for k, v in result["split"].items()
                                                     if k.endswith(kind))
            result[f"{kind}_gflop_per_clip"] = sum(v["gflop_per_clip"] for k, v in result["split"].items()
                                                   if k.endswith(kind))
    return result


def _profile(fn: Callable[[], Any], fast: Any, top: int, device: torch.device | None = None) -> list[dict[str, Any]]:
    """The ``top`` operators by own time in one call of ``fn`` (torch.profiler), in ``fast``'s inference
    context (``fast=None``: as is, on ``device``)."""
    from contextlib import nullcontext

    from torch.profiler import ProfilerActivity, profile

    device = fast.device if fast is not None else torch.device(device or "cpu")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with fast.context() if fast is not None else nullcontext(), profile(activities=activities) as prof:
        fn()
        _sync(device)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [{"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3,
             "share": e.self_cpu_time_total / total} for e in rows]


def _bench_split(module: nn.Module, fast: Any, s: BenchSettings) -> dict[str, dict[str, float]]:
    """Each encoder and decoder timed on its own (eager, same precision and layout as the whole model)."""
    device = torch.device(s.device)
    flops = _split_flops(s.model, s.batch, s.frames, s.size)
    out: dict[str, dict[str, float]] = {}
    with fast.context():
        for name, part in predictor_parts(module):
            x = fast.convert_input(torch.rand(s.batch, part.in_channels, s.frames, s.size, s.size) * 2 - 1)
            feats = part.encoder(x)
            enc = _median(time_call(lambda p=part, x=x: p.encoder(x), s.repeats, s.warmup, device))
            dec = _median(time_call(lambda p=part, f=feats, x=x: p.decoder(f, x), s.repeats, s.warmup, device))
            for kind, seconds in (("encoder", enc), ("decoder", dec)):
                f = flops[f"{name}.{kind}"] / s.batch
                out[f"{name}.{kind}"] = {"seconds_per_clip": seconds / s.batch, "gflop_per_clip": f / 1e9,
                                         "achieved_gflops": f / (seconds / s.batch) / 1e9}
    return out


class _TimedStep:
    """One optimisation step as ``centrifuge train`` runs it (:func:`~centrifuge.training_step.train_step`, set
    up by :func:`~centrifuge.training_step.new_run`), on one random batch; its parts timed when recorded."""

    PARTS = ("forward", "loss", "backward", "optimizer")

    def __init__(self, s: BenchSettings, device: torch.device, batch: int):
        if device.type == "cpu":
            keep_freed_memory()  # as centrifuge train does
        self.device = device
        torch.manual_seed(0)
        model = build_model(s.model).to(device)
        memory_format = torch.channels_last_3d if s.channels_last else torch.contiguous_format
        model.to(memory_format=memory_format)
        cfg = TrainConfig(optimizer=s.optimizer, weight_decay=s.weight_decay, lr=1e-4, momentum=0.9,
                          frames=s.frames, size=s.size, compile=s.train_compile, compile_loss=s.compile_loss)
        mix = (torch.rand(batch, 3, s.frames, s.size, s.size, device=device) * 2 - 1).to(memory_format=memory_format)
        layers = torch.rand(batch, cfg.videos_per_blend, 3, s.frames, s.size, s.size, device=device) * 2 - 1
        self.batches = itertools.repeat({"mix": mix, "layers": layers})  # already where the step moves them
        amp = autocast_dtype(s.precision, device)
        self.run = new_run(s.model, cfg, device, model, make_optimizer(model, cfg, device), amp, memory_format, batch)
        self.parts: dict[str, list[float]] = {name: [] for name in self.PARTS}
        self._laps, self._last = dict.fromkeys(self.PARTS, 0.0), 0.0

    def _lap(self, part: str) -> None:
        """The time since the last part ended, to a device synchronisation, added to ``part``'s."""
        _sync(self.device)
        now = time.perf_counter()
        self._laps[part] += now - self._last
        self._last = now

    def __call__(self, record: bool = True) -> None:
        self._laps, self._last = dict.fromkeys(self.PARTS, 0.0), time.perf_counter()
        train_step(self.run, Distributed(), self.batches, 0, self._lap)
        if record:
            for name, seconds in self._laps.items():
                self.parts[name].append(seconds)


def bench_training(s: BenchSettings) -> dict[str, Any]:
    """One optimisation step as ``centrifuge train`` runs it, timed in its parts.

    The preset's optimizer (``s.optimizer``, fused where available), the PIT loss against two target layers,
    channels-last unless ``s.channels_last`` is off, and with ``s.compile`` the model compiled as
    :func:`centrifuge.training_step.compile_for_training` does (its compile time is reported, not timed as
    a step): the set-up and the step are ``centrifuge train``'s own. Forward, loss, backward and optimizer step
    are each timed to a device synchronisation.
    """
    device = torch.device(s.device)
    batch = s.train_batch or s.batch
    step = _TimedStep(s, device, batch)
    for _ in range(s.warmup):
        step(record=False)
    times = time_call(step, s.repeats, 0, device)
    seconds = _median(times)
    profile = _profile(lambda: step(record=False), None, s.profile, device) if s.profile else None
    meta = _meta_model(s.model)
    flops = count_flops(meta, torch.zeros(batch, 3, s.frames, s.size, s.size, device="meta"), backward=True)
    return {
        "batch": batch,
        "seconds_per_step": seconds,
        "steps_all": times,
        "parts_seconds": {name: _median(v) for name, v in step.parts.items()},
        "clips_per_s": batch / seconds,
        "gflop_per_clip": flops / batch / 1e9,
        "achieved_gflops": flops / seconds / 1e9,
        "dtype": str(step.run.amp or torch.float32).removeprefix("torch."),
        "optimizer": s.optimizer,
        "compiled": step.run.net is not step.run.model,
        **({"compile_seconds": step.run.compile_seconds} if step.run.compile_seconds else {}),
        **({"profile": profile} if profile else {}),
    }


def bench_data(s: BenchSettings) -> dict[str, Any]:
    """Training clips per second from ``s.data`` through ``BlendDataset`` + ``DataLoader``, per worker count.

    With ``s.photos``, layers are rendered from photos (:mod:`centrifuge.synth`): all of them without
    ``s.data``, half of them with it, as ``train --photos`` does. A cache made by ``centrifuge prepare`` is
    read through its manifest; any other folder is searched for videos. Each count is timed over
    ``data_batches`` batches after every worker has delivered its first (which pays for starting the workers).
    Clips are counted as blends (one training example each, of two layers).
    """
    from torch.utils.data import DataLoader

    from .cache import cached_videos, is_cache
    from .data import BlendDataset, ClipSpec
    from .sources import list_videos

    if s.data is None and not s.photos:
        raise ValueError("no data folder given")
    root = Path(s.data) if s.data is not None else None
    cached = root is not None and is_cache(root)
    paths = [] if root is None else cached_videos(root) if cached else list_videos(root)
    synth = None
    if s.photos:
        from .synth import PhotoSynth

        synth = PhotoSynth(s.photos, s.cutouts)
    elif len(paths) < 2:
        raise ValueError(f"need at least 2 videos in {root}, found {len(paths)}")
    batch = s.data_batch or s.train_batch or s.batch
    spec = ClipSpec(frames=s.frames, size=s.size, train=True)
    result: dict[str, Any] = {"folder": str(root), "cache": cached, "videos": len(paths), "batch": batch,
                              "photos": len(synth) if synth else 0, "clips_per_s": {}}
    for workers in s.workers:
        dataset = BlendDataset(paths, spec, length=(s.data_batches + max(1, workers)) * batch, seed=0, synth=synth)
        loader = DataLoader(dataset, batch_size=batch, num_workers=workers,
                            prefetch_factor=4 if workers else None)
        it = iter(loader)
        # Time from when every worker has delivered its first batch: steady state, not process start-up.
        for _ in range(max(1, workers)):
            next(it)
        start = time.perf_counter()
        n = 0
        for b in it:
            n += b["mix"].shape[0]
        elapsed = time.perf_counter() - start
        result["clips_per_s"][str(workers)] = n / elapsed if elapsed > 0 else math.inf
        del it, loader
    return result


def machine_info(device: str | torch.device) -> dict[str, Any]:
    """Where the figures come from."""
    device = torch.device(device)
    info: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                            "cpu_count": os.cpu_count(), "platform": platform.platform()}
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info["cpu"] = cpu
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run_bench(s: BenchSettings) -> dict[str, Any]:
    """All requested measurements as one JSON-ready dict."""
    device = torch.device(s.device)
    result: dict[str, Any] = {"settings": s.to_dict(), "machine": machine_info(device)}
    peaks: dict[torch.dtype, float] = {}

    def peak(dtype: torch.dtype) -> float:
        if dtype not in peaks:
            peaks[dtype] = measure_peak_flops(device, dtype, n=s.peak_size, seconds=s.peak_seconds) / 1e9
        return peaks[dtype]

    if s.inference:
        inf = bench_inference(s)
        split = inf.pop("split", None)
        result["peak_gflops"] = peak(resolve_precision(s.precision, device))
        result.update(inf)
        result["fraction_of_peak"] = inf["achieved_gflops"] / result["peak_gflops"]
        if split is not None:
            result["split"] = split
    if s.train:
        tr = bench_training(s)
        # training follows train.py's precision policy, which may differ from inference's
        tr["peak_gflops"] = peak(autocast_dtype(s.precision, device) or torch.float32)
        tr["fraction_of_peak"] = tr["achieved_gflops"] / tr["peak_gflops"]
        result["train"] = tr
    if s.data is not None or s.photos:
        result["data"] = bench_data(s)
        if s.train:
            best = max(result["data"]["clips_per_s"].values())
            result["data"]["ratio_to_training"] = best / result["train"]["clips_per_s"]
    return result


def _fmt_s(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _profile_lines(rows: list[dict[str, Any]]) -> list[str]:
    return [f"  {row['op'][:48]:<48} {row['calls']:5d} calls {row['self_ms']:10.1f} ms {100 * row['share']:5.1f}%"
            for row in rows]


def format_report(r: dict[str, Any]) -> str:
    """The readable table ``centrifuge bench`` prints."""
    s = r["settings"]
    m = s["model"]
    name = f"{'PC' if m['corrector'] else 'P'}-{m['n_layers']} width {m['width']:g} to {m['final_endpoint']}"
    if m.get("tone_grid"):
        name += f", tone grid {m['tone_grid']}"
    # The loss is compiled only for the training step, so say so only when one was timed.
    loss = f"compiled loss {s.get('compile_loss', False)}, " if "train" in r else ""
    lines = [f"model: {name}; clip {s['frames']}x{s['size']}x{s['size']}, batch {s['batch']}; device {s['device']}, "
             f"precision {r.get('dtype', s['precision'])}, channels-last {s['channels_last']}, "
             f"compile {s['compile']}, {loss}{r['machine']['threads']} threads"]
    if "peak_gflops" in r:
        lines.append(f"peak (matrix product):  {r['peak_gflops']:10.1f} GFLOP/s ({r['dtype']})")
    if "seconds_per_clip" in r:
        lines.append(f"inference:              {_fmt_s(r['seconds_per_clip']):>10} per clip, "
                     f"{r['gflop_per_clip']:.4g} GFLOP, {r['achieved_gflops']:.1f} GFLOP/s, "
                     f"{100 * r['fraction_of_peak']:.0f}% of peak")
    for key, v in r.get("split", {}).items():
        lines.append(f"  {key:<20}  {_fmt_s(v['seconds_per_clip']):>10} per clip, {v['gflop_per_clip']:.4g} GFLOP, "
                     f"{v['achieved_gflops']:.1f} GFLOP/s")
    if r.get("profile"):
        lines.append("operators by own time (one forward, torch.profiler):")
        lines.extend(_profile_lines(r["profile"]))
    if "train" in r:
        t = r["train"]
        model = "compiled model" if t.get("compiled") else "eager model"
        lines.append(f"training step:          {_fmt_s(t['seconds_per_step']):>10} (batch {t['batch']}, {t['dtype']}, "
                     f"{model}, {t.get('optimizer', 'sgd')}), {t['clips_per_s']:.2f} clips/s, "
                     f"{t['achieved_gflops']:.1f} GFLOP/s, {100 * t['fraction_of_peak']:.1f}% of the "
                     f"{t['peak_gflops']:.0f} GFLOP/s peak")
        if "parts_seconds" in t:
            total = sum(t["parts_seconds"].values()) or 1.0
            lines.append("  " + ", ".join(f"{name} {_fmt_s(v)} ({100 * v / total:.0f}%)"
                                          for name, v in t["parts_seconds"].items()))
        if t.get("compile_seconds"):
            lines.append(f"  compiling the model for training: {t['compile_seconds']:.1f} s (once per run)")
        if t.get("profile"):
            lines.append("operators by own time (one training step, torch.profiler):")
            lines.extend(_profile_lines(t["profile"]))
    if "data" in r:
        d = r["data"]
        kind = "cache" if d["cache"] else "videos" if not d.get("photos") else \
            "photos" if not d["videos"] else "videos + photos"
        for w, v in d["clips_per_s"].items():
            lines.append(f"data ({kind}, {w} workers): {v:8.2f} clips/s")
        if "ratio_to_training" in d:
            lines.append(f"data / training rate:   {d['ratio_to_training']:10.2f}x")
    return "\n".join(lines)
