"""Machinery shared by the Sec. 4 experiments: the data and its held-out part, clip sets, pairs, training (or
loading) the models an experiment needs, evaluation by composition of :mod:`centrifuge.evaluate`, and the
report files.

Held-out data
    A folder of videos is split with :func:`centrifuge.data.split_videos` (``val_fraction``, ``seed``), or
    ``held_out`` names the held-out videos. Models are trained on the training part only. When the held-out
    part has at least :data:`MIN_HELD_OUT_VIDEOS` videos, evaluation blends held-out clips with held-out clips
    only; with fewer (a handful of clips) there are too few such pairs, so a pair is evaluated when at least
    one of its two clips is held out (its partner may be a training video). With Kinetics CSVs, training uses
    the rows of the ``train`` split and evaluation a seeded subset of the validation rows (``val`` /
    ``validate``).

Clips
    Each evaluation video gives ``windows`` clips: evenly spaced windows of ``frames`` frames (a single window
    is the centre window ``centrifuge evaluate`` uses), shortest side resized to ``size``, centre crop. Two
    clips of the same video are never blended, except by the ``same-source`` experiment. Every blend uses
    alpha = 0.5 (Eq. 1).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import random
import re
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..checkpoint import CONFIG, WEIGHTS, load_model, read_model_info
from ..config import load_preset
from ..data import list_videos, load_kinetics, split_videos, to_model, write_file_list
from ..errors import CentrifugeError
from ..evaluate import evaluate_clips
from ..model import ModelConfig, Predictor, PredictorCorrector, build_model
from ..output_set import OutputSet
from ..video import VideoError, check_video, read_video

log = logging.getLogger("centrifuge")

#: Kinetics CSV ``split`` values that mean validation.
VAL_SPLITS = ("val", "validate", "valid", "validation")
#: With at least this many held-out videos, pairs are held-out x held-out only (see the module docstring).
MIN_HELD_OUT_VIDEOS = 5
#: Settings fields that do not change a trained model (left out of its cache key).
_NOT_IN_KEY = {"data", "kinetics_csv", "kinetics_split", "file_list", "val_data", "device", "precision", "workers",
               "out", "log_every", "ckpt_every", "image_every", "val_every", "val_pairs", "compile"}


@dataclass
class Settings:
    """What ``centrifuge experiment`` was asked to do (see the command's help for each field)."""

    data: str
    out: str
    kinetics_csv: list[str] = field(default_factory=list)
    preset: str = "cpu-tiny"
    iterations: int | None = None
    model: str | None = None
    frames: int | None = None
    size: int | None = None
    pairs: int = 200
    windows: int = 3
    max_videos: int = 32
    seed: int = 0
    val_fraction: float = 0.2
    held_out: list[str] = field(default_factory=list)
    models_dir: str | None = None
    device: str = "auto"
    batch_size: int = 8
    overwrite: bool = False
    progress: bool = False

    def command(self, name: str) -> str:
        """The ``centrifuge experiment`` command line that gives these settings."""
        default = Settings(data="", out="")
        args = ["centrifuge", "experiment", name, "--data", self.data]
        for csv_path in self.kinetics_csv:
            args += ["--kinetics-csv", csv_path]
        args += ["--out", self.out]
        for key in ("preset", "iterations", "model", "frames", "size", "pairs", "windows", "max_videos", "seed",
                    "val_fraction", "models_dir", "device"):
            value = getattr(self, key)
            if value is not None and value != getattr(default, key):
                args += [f"--{key.replace('_', '-')}", str(value)]
        if self.held_out:
            args += ["--held-out", *self.held_out]
        return shlex.join(args)


@dataclass
class Video:
    """One video of the evaluation set."""

    path: Path
    held_out: bool
    label: str | None = None


# --------------------------------------------------------------------------------------------------------
# data and split


def _folder_label(path: Path, root: Path) -> str | None:
    # root/<class>/video.mp4 (Kinetics-style folders): the class is the parent folder; flat folders have none.
    return path.parent.name if path.parent != root else None


def _match_held_out(videos: list[Path], names: Sequence[str], root: Path) -> set[Path]:
    chosen: set[Path] = set()
    for name in names:
        hits = [v for v in videos if v.name == name or v == Path(name) or v == root / name
                or v.resolve() == Path(name).resolve()]
        if not hits:
            raise CentrifugeError(f"--held-out video not found under {root}: {name}")
        chosen.update(hits)
    return chosen


def split_data(s: Settings) -> tuple[list[Path], list[Video], str]:
    """Training videos, evaluation videos (held-out ones first) and a sentence describing the split."""
    root = Path(s.data)
    if not root.exists():
        raise CentrifugeError(f"no such file or folder: {s.data}")
    rng = random.Random(f"experiment-videos:{s.seed}")
    if s.kinetics_csv:
        entries = []
        for csv_path in s.kinetics_csv:
            if not Path(csv_path).is_file():
                raise CentrifugeError(f"no such Kinetics CSV: {csv_path}")
            found, _ = load_kinetics(csv_path, root)
            entries.extend(found)
        train = sorted({e.path for e in entries if e.split.lower() == "train" and e.path is not None})
        val = sorted({(e.path, e.label or None) for e in entries
                      if e.split.lower() in VAL_SPLITS and e.path is not None}, key=lambda x: str(x[0]))
        if len(val) < 2:
            raise CentrifugeError(f"need at least 2 validation clips (split {'/'.join(VAL_SPLITS)}) found under "
                                  f"{root}, found {len(val)}")
        n_val = len(val)
        if len(val) > s.max_videos:
            val = sorted(rng.sample(val, s.max_videos), key=lambda x: str(x[0]))
        videos = [Video(p, True, label) for p, label in val]
        how = (f"Kinetics: {len(train)} training clips (split `train`), {len(videos)} of {n_val} validation "
               f"clips (seeded subset); pairs of validation clips")
        return train, videos, how
    if not root.is_dir():
        raise CentrifugeError(f"--data must be a folder of videos (or a Kinetics root with --kinetics-csv): {s.data}")
    paths = list(dict.fromkeys(list_videos(root)))
    if len(paths) < 2:
        raise CentrifugeError(f"need at least 2 videos in {s.data}, found {len(paths)}")
    if s.held_out:
        held = _match_held_out(paths, s.held_out, root)
        train = [p for p in paths if p not in held]
        val = [p for p in paths if p in held]
        how = f"held-out videos named on the command line: {len(val)}"
    else:
        train, val = split_videos(paths, s.val_fraction, s.seed)
        how = f"seeded split (fraction {s.val_fraction}, seed {s.seed}), held-out videos: {len(val)}"
    if not val:
        raise CentrifugeError("no held-out videos: raise --val-fraction or name them with --held-out")
    strict = len(val) >= MIN_HELD_OUT_VIDEOS
    held = sorted(rng.sample(val, s.max_videos)) if len(val) > s.max_videos else val
    others = [] if strict else train
    if len(held) + len(others) > s.max_videos:
        others = sorted(rng.sample(others, max(s.max_videos - len(held), 0)))
    videos = [Video(p, True, _folder_label(p, root)) for p in held]
    videos += [Video(p, False, _folder_label(p, root)) for p in others]
    names = ", ".join(p.name for p in val[:8]) + (", ..." if len(val) > 8 else "")
    how += (f" ({names}); training videos: {len(train)}; "
            + ("pairs of held-out clips" if strict else
               f"fewer than {MIN_HELD_OUT_VIDEOS} held-out videos, so every evaluated pair includes at least one "
               "held-out clip (its partner may come from a training video)"))
    return train, videos, how


# --------------------------------------------------------------------------------------------------------
# clips


def window_starts(num_frames: int, frames: int, windows: int) -> list[int]:
    """Starts of ``windows`` evenly spaced windows of ``frames`` frames: window ``k`` starts ``(k + 1/2) /
    windows`` of the way through the possible starts (a single window is the centre window); duplicates go."""
    slack = max(num_frames - frames, 0)
    starts = [(2 * k + 1) * slack // (2 * windows) for k in range(windows)]
    return list(dict.fromkeys(starts))


def _centre_crop(frames: np.ndarray, size: int) -> np.ndarray:
    _, h, w, _ = frames.shape
    y, x = (h - size) // 2, (w - size) // 2
    return frames[:, y:y + size, x:x + size]


@dataclass
class ClipSet:
    """Evaluation clips: ``frames`` ``uint8 [N, T, S, S, 3]``, each from ``videos[video[i]]`` at ``start[i]``."""

    frames: np.ndarray
    video: list[int]
    start: list[int]
    videos: list[Video]

    def __len__(self) -> int:
        return len(self.video)

    def name(self, i: int) -> str:
        return f"{self.videos[self.video[i]].path.name}@{self.start[i]}"

    def held_out(self, i: int) -> bool:
        return self.videos[self.video[i]].held_out

    def label(self, i: int) -> str | None:
        return self.videos[self.video[i]].label


def load_clip_set(videos: Sequence[Video], frames: int, size: int, windows: int) -> ClipSet:
    """Decode ``windows`` clips of each video (videos that fail to decode or are not videos, a one-frame file
    included, are skipped with a warning)."""
    clips, video_idx, starts, kept = [], [], [], []
    for v in videos:
        try:
            check_video(v.path)
            data = read_video(v.path, 0, None, size=size)
            if len(data) == 0:
                raise VideoError(f"no frames decoded from {v.path}")
        except VideoError as e:
            log.warning("skipping video that cannot be decoded: %s", e)
            continue
        if min(data.shape[1:3]) < size:
            raise CentrifugeError(f"{v.path} decodes smaller than {size} pixels")
        for start in window_starts(len(data), frames, windows):
            window = data[start:start + frames]
            if len(window) < frames:  # shorter than a clip: loop it, as training does
                window = window[np.arange(frames) % len(window)]
            clips.append(np.ascontiguousarray(_centre_crop(window, size)))
            video_idx.append(len(kept))
            starts.append(start)
        kept.append(v)
    if len({i for i in video_idx}) < 2:
        raise CentrifugeError("fewer than 2 evaluation videos could be decoded")
    return ClipSet(np.stack(clips), video_idx, starts, kept)


def frozen_clips(frames: np.ndarray) -> np.ndarray:
    """Table 3's frozen videos, deterministic: the middle frame of each clip repeated over time."""
    t = frames.shape[1] // 2
    return np.ascontiguousarray(np.broadcast_to(frames[:, t:t + 1], frames.shape))


def pair_kind_ok(cs: ClipSet, i: int, j: int, kind: str) -> bool:
    """Whether clips ``i, j`` form a pair of ``kind``: ``different`` (two videos), ``same-video`` (two windows of
    one video) or ``same-class`` (two videos with the same label)."""
    same_video = cs.video[i] == cs.video[j]
    if kind == "different":
        return not same_video
    if kind == "same-video":
        return same_video
    if kind == "same-class":
        return not same_video and cs.label(i) is not None and cs.label(i) == cs.label(j)
    raise ValueError(f"unknown pair kind {kind!r}")


def choose_clip_pairs(cs: ClipSet, max_pairs: int, seed: int, kind: str = "different") -> list[tuple[int, int]]:
    """Evaluation pairs of clips of ``kind`` under the held-out rule (module docstring); a seeded subset of
    ``max_pairs`` when there are more."""
    strict = sum(v.held_out for v in cs.videos) >= MIN_HELD_OUT_VIDEOS or all(v.held_out for v in cs.videos)
    pairs = []
    for i in range(len(cs)):
        for j in range(i + 1, len(cs)):
            held = (cs.held_out(i) and cs.held_out(j)) if strict else (cs.held_out(i) or cs.held_out(j))
            if held and pair_kind_ok(cs, i, j, kind):
                pairs.append((i, j))
    if len(pairs) > max_pairs:
        pairs = sorted(random.Random(f"experiment-pairs:{seed}:{kind}").sample(pairs, max_pairs))
    return pairs


# --------------------------------------------------------------------------------------------------------
# evaluation (composition of centrifuge.evaluate)


def _autocast(device: torch.device) -> Any:
    from ..train import autocast_dtype

    amp = autocast_dtype("auto", device)
    return torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)


def _chunks(pairs: Sequence[tuple[int, int]], size: int) -> Iterator[Sequence[tuple[int, int]]]:
    for start in range(0, len(pairs), size):
        yield pairs[start:start + size]


def _gather(frames: np.ndarray, chunk: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The clips a chunk of pairs uses, as model tensors, and the pairs re-indexed into them."""
    used = sorted({i for pair in chunk for i in pair})
    where = {i: k for k, i in enumerate(used)}
    return to_model(frames[used]), [(where[a], where[b]) for a, b in chunk]


def evaluate_pairs(model: torch.nn.Module | None, frames: np.ndarray, pairs: Sequence[tuple[int, int]],
                   batch_size: int = 8, device: str | torch.device = "cpu") -> list[dict[str, Any]]:
    """Per-pair rows of :func:`centrifuge.evaluate.evaluate_clips` (``a``, ``b`` index ``frames``, ``uint8
    [N, T, S, S, 3]``), computed a batch at a time so only the clips in use are ever in float."""
    device = torch.device(device)
    rows: list[dict[str, Any]] = []
    for chunk in _chunks(pairs, batch_size):
        clips, local = _gather(frames, chunk)
        with _autocast(device):
            result = evaluate_clips(model, clips, local, batch_size=len(local), device=device)
        for (a, b), row in zip(chunk, result["per_pair"], strict=True):
            rows.append({**row, "a": a, "b": b})
    return rows


@torch.inference_mode()
def iter_outputs(model: torch.nn.Module, frames: np.ndarray, pairs: Sequence[tuple[int, int]],
                 batch_size: int = 8, device: str | torch.device = "cpu"
                 ) -> Iterator[tuple[Sequence[tuple[int, int]], torch.Tensor, torch.Tensor]]:
    """``(pairs, blends [B, 3, T, H, W], outputs [B, n, 3, T, H, W])`` a batch at a time, on the CPU, outputs
    clipped to [-1, 1] as :func:`evaluate_pairs` scores them."""
    from ..blend import blend

    device = torch.device(device)
    for chunk in _chunks(pairs, batch_size):
        clips, local = _gather(frames, chunk)
        mix = blend(clips[[a for a, _ in local]], clips[[b for _, b in local]], 0.5)
        with _autocast(device):
            out = model(mix.to(device))
        yield chunk, mix, out.float().cpu().clamp(-1, 1)


def encoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The I3D encoder of a predictor (the predictor's, for a predictor-corrector)."""
    if isinstance(model, PredictorCorrector):
        model = model.predictor
    if not isinstance(model, Predictor):
        raise TypeError(f"not a centrifuge model: {type(model).__name__}")
    return model.encoder


@torch.inference_mode()
def encoder_features(model: torch.nn.Module, frames: np.ndarray, endpoints: Sequence[str], batch_size: int = 8,
                     device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Encoder features of every clip, averaged over time and space: ``{endpoint: [N, C]}``."""
    encoder = encoder_of(model)
    missing = [e for e in endpoints if e not in encoder.output_endpoints]
    if missing:
        raise CentrifugeError(f"the model's encoder has no endpoint {missing[0]} "
                              f"(it outputs {', '.join(encoder.output_endpoints)})")
    device = torch.device(device)
    feats: dict[str, list[torch.Tensor]] = {e: [] for e in endpoints}
    for start in range(0, len(frames), batch_size):
        x = to_model(frames[start:start + batch_size]).to(device)
        with _autocast(device):
            out = encoder(x)
        for e in endpoints:
            feats[e].append(out[e].float().mean(dim=(2, 3, 4)).cpu())
    return {e: torch.cat(v) for e, v in feats.items()}


def pair_records(name: Callable[[int], str], rows: Sequence[dict[str, Any]], identity: bool = False,
                 **group: Any) -> list[dict[str, Any]]:
    """``pairs.csv`` rows from :func:`evaluate_pairs` rows: ``group`` columns, clip names, the model's loss and
    PSNR (the identity baseline's with ``identity``, or when there is no model) and the identity loss."""
    out = []
    for r in rows:
        use_identity = identity or r["model_loss"] is None
        out.append({**group, "a": name(r["a"]), "b": name(r["b"]),
                    "loss": r["identity_loss"] if use_identity else r["model_loss"],
                    "psnr_db": r["identity_psnr_db"] if use_identity else r["psnr_db"],
                    "identity_loss": r["identity_loss"]})
    return out


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation coefficient (NaN when either variable is constant or there are < 2 points)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


# --------------------------------------------------------------------------------------------------------
# models


@dataclass
class ModelRecord:
    """A model an experiment used, for the report."""

    label: str
    path: str
    source: str  # trained | reused | loaded | untrained
    config: dict[str, Any]
    iterations: int | None = None
    train_seconds: float | None = None


def _run_config(weights: Path) -> dict[str, Any] | None:
    """The ``config.json`` of the run a weights file belongs to, if there is one."""
    p = weights.parent / CONFIG
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


class Context:
    """One experiment run: settings, data split, clips, models (trained, reused or loaded) and timings."""

    def __init__(self, settings: Settings, name: str):
        self.s = settings
        self.name = name
        self.out = Path(settings.out)
        self.models_dir = Path(settings.models_dir) if settings.models_dir else self.out / "models"
        self.t0 = time.time()
        from ..train import pick_device

        self.device = pick_device(settings.device)
        try:
            self.base_model_cfg, self.base_train_cfg = load_preset(settings.preset)
        except ValueError as e:
            raise CentrifugeError(str(e)) from e
        self.model_path: Path | None = None
        model_run = None
        if settings.model:
            model_cfg, _, self.model_path = read_model_info(settings.model)
            self.base_model_cfg = model_cfg
            model_run = _run_config(self.model_path)
        run_train = (model_run or {}).get("train", {})
        self.frames = settings.frames or run_train.get("frames") or self.base_train_cfg.frames
        self.size = settings.size or run_train.get("size") or self.base_train_cfg.size
        self.train_videos, self.videos, self.split_text = split_data(settings)
        if model_run is not None:
            self._warn_if_trained_on_held_out(model_run)
        # Decoded now, before any training: evaluation videos that are not videos (or too few) stop the run at once.
        self._clips: ClipSet | None = load_clip_set(self.videos, self.frames, self.size, settings.windows)
        self.models: list[ModelRecord] = []

    def _warn_if_trained_on_held_out(self, run: dict[str, Any]) -> None:
        names = {Path(p).name for p in run.get("train", {}).get("data", [])}
        seen = [v.path.name for v in self.videos if v.held_out and v.path.name in names]
        if seen:
            log.warning("the model was trained on held-out videos: %s (name them with --held-out)", ", ".join(seen))

    @property
    def clips(self) -> ClipSet:
        if self._clips is None:
            self._clips = load_clip_set(self.videos, self.frames, self.size, self.s.windows)
        return self._clips

    def pairs(self, kind: str = "different") -> list[tuple[int, int]]:
        return choose_clip_pairs(self.clips, self.s.pairs, self.s.seed, kind)

    def evaluate(self, model: torch.nn.Module | None, frames: np.ndarray,
                 pairs: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
        return evaluate_pairs(model, frames, pairs, self.s.batch_size, self.device)

    # -- models

    def model_config(self, **overrides: Any) -> ModelConfig:
        return replace(self.base_model_cfg, **overrides)

    def standard_model(self, label: str = "standard model") -> tuple[torch.nn.Module, ModelRecord]:
        """``--model`` when given, else the preset's model trained on the training videos."""
        if self.model_path is not None:
            model, info = load_model(self.model_path, self.device)
            record = ModelRecord(label, str(self.model_path), "loaded", info["config"], info.get("step"))
            _check_layers(info["config"], label)
            self.models.append(record)
            return model, record
        return self.trained_model(self.base_model_cfg, label=label)

    def untrained_model(self, cfg: ModelConfig, label: str) -> tuple[torch.nn.Module, ModelRecord]:
        """Random initial weights (seeded), BatchNorm in inference mode: Table 1's untrained predictor."""
        torch.manual_seed(self.s.seed)
        model = build_model(cfg).to(self.device).eval()
        record = ModelRecord(label, "-", "untrained", cfg.to_dict(), 0)
        self.models.append(record)
        return model, record

    def train_settings(self, frozen: bool = False) -> Any:
        cfg = replace(self.base_train_cfg)
        if self.s.iterations is not None:
            cfg.iterations = self.s.iterations
        cfg.frames, cfg.size, cfg.seed, cfg.frozen = self.frames, self.size, self.s.seed, frozen
        cfg.data, cfg.kinetics_csv, cfg.val_data = [], None, []
        cfg.device = self.s.device
        return cfg

    def trained_model(self, model_cfg: ModelConfig, frozen: bool = False,
                      label: str = "") -> tuple[torch.nn.Module, ModelRecord]:
        """Train ``model_cfg`` on the training videos, or reuse a finished run with the same settings.

        Runs live in ``models_dir/<kind><n>-<endpoint>[-frozen]-<key>``, where the key hashes everything that
        defines the model (configs and the list of training videos), so experiments that need the same model
        share it and a different one never collides.
        """
        from ..train import train

        _check_layers(model_cfg.to_dict(), label)
        if len(self.train_videos) < 2:
            raise CentrifugeError(f"need at least 2 training videos to train {label or 'a model'}, found "
                                  f"{len(self.train_videos)} (or pass --model)")
        cfg = self.train_settings(frozen)
        videos = [str(p.resolve()) for p in self.train_videos]
        key_data = {"model": model_cfg.to_dict(), "videos": videos,
                    "train": {k: v for k, v in asdict(cfg).items() if k not in _NOT_IN_KEY}}
        key = hashlib.sha256(json.dumps(key_data, sort_keys=True, default=str).encode()).hexdigest()[:8]
        kind = "pc" if model_cfg.corrector else "p"
        frozen_tag = "-frozen" if frozen else ""
        run = self.models_dir / f"{kind}{model_cfg.n_layers}-{model_cfg.final_endpoint}{frozen_tag}-{key}"
        cfg.out, cfg.file_list = str(run), str(run / "train-videos.txt")
        run.mkdir(parents=True, exist_ok=True)
        with _locked(run / ".lock"):  # an experiment running beside this one may be training the same model
            state = _run_config(run / WEIGHTS)
            source = "reused"
            if state is None or int(state.get("step", 0)) < cfg.iterations:
                write_file_list(videos, cfg.file_list)
                log.info("%s: training %s for %d iterations -> %s", self.name, label, cfg.iterations, run)
                state = train(model_cfg, cfg, resume=True, progress=self.s.progress)
                source = "trained"
            else:
                log.info("%s: reusing %s (%s)", self.name, label, run)
        model, info = load_model(run, self.device)
        record = ModelRecord(label, str(run / WEIGHTS), source, info["config"], int(state.get("step", 0)),
                             state.get("elapsed_s"))
        self.models.append(record)
        return model, record


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (POSIX ``flock``; elsewhere no lock), released on exit."""
    try:
        import fcntl
    except ImportError:  # Windows: experiments sharing a models folder must not run at the same time
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _check_layers(cfg: dict[str, Any], label: str) -> None:
    if int(cfg.get("n_layers", 0)) < 2:
        raise CentrifugeError(f"{label or 'the model'} has {cfg.get('n_layers')} output layer(s); separating "
                              "two videos needs at least 2")


# --------------------------------------------------------------------------------------------------------
# reports


@dataclass
class Report:
    """What an experiment found: ``rows`` (``results.csv`` and the Markdown table), per-pair details
    (``pairs.csv``), ``notes`` computed from the rows, and ``figures`` (PNG name -> PIL image)."""

    title: str
    description: str
    columns: list[str]
    rows: list[dict[str, Any]]
    pair_rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    extra: str = ""  # Markdown after the table (e.g. the paper's layout of it)


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers with ``digits`` decimals, None/NaN as ``-``, anything else as text."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _cell(column: str, value: Any) -> str:
    if column.startswith("paper") and isinstance(value, (int, float)):
        return f"{value:g}"  # as printed in the paper
    return fmt(value, 2 if column.startswith("psnr") else 4)


def markdown_table(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of ``rows`` (numbers to 4 decimals, PSNR to 2, the paper's as printed)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(c, r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _csv_text(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in columns})
    return buf.getvalue()


#: The names a report's files have: the only files ``experiment`` refuses to replace unasked, replaces or removes.
REPORT_NAMES = re.compile(r"results\.(?:csv|md|json)|pairs\.csv|[\w-]+\.png")


def _listed(out: Path) -> list[str]:
    return json.loads((out / "results.json").read_text())["files"]


def open_report_folder(out: Path, overwrite: bool) -> OutputSet:
    """Hold ``out`` for the whole run and refuse, before any slow work, to replace an earlier report unasked
    (``centrifuge.output_set``: the report is staged and published with ``results.csv`` last)."""
    return OutputSet(out, "experiment", REPORT_NAMES, "results.csv", _listed, overwrite)


def write_report(ctx: Context, report: Report, out_set: OutputSet) -> dict[str, Path]:
    """Write ``results.csv``, ``pairs.csv``, ``results.md``, ``results.json`` and the figures into ``--out``:
    staged in ``out_set``, then published with ``results.csv`` last (its presence marks a finished report)."""
    out = ctx.out
    for name, image in report.figures.items():
        # 256 colours: a third of the size for frame strips, no visible change for charts
        small = image.quantize(256, method=Image.Quantize.MEDIANCUT) if image.mode == "RGB" else image
        small.save(out_set.path(name), format="PNG", optimize=True)
    pair_cols = list(dict.fromkeys(k for r in report.pair_rows for k in r))
    if report.pair_rows:
        out_set.path("pairs.csv").write_text(_csv_text(pair_cols, report.pair_rows))
    elapsed = time.time() - ctx.t0
    s = ctx.s
    md = [f"# {report.title}", "", report.description, "", markdown_table(report.columns, report.rows), ""]
    if report.extra:
        md += [report.extra, ""]
    if report.notes:
        md += ["Computed from the table:", ""] + [f"- {n}" for n in report.notes] + [""]
    md += [f"![{name}]({name})\n" for name in report.figures]
    md += ["## Settings", "",
           f"- command: `{s.command(ctx.name)}`",
           f"- data: {ctx.split_text}",
           f"- clips: {ctx.frames} frames x {ctx.size}x{ctx.size}, up to {s.windows} windows per video, "
           f"{len(ctx.clips)} clips from {len(ctx.clips.videos)} videos, alpha = 0.5, at most {s.pairs} pairs "
           f"per row (seed {s.seed})",
           f"- preset: {s.preset}; device: {ctx.device}; wall time: {elapsed:.0f} s", ""]
    if ctx.models:
        md += ["| model | source | iterations | training time (s) | n | corrector | width | endpoint | weights |",
               "|---|---|---|---|---|---|---|---|---|"]
        for m in ctx.models:
            c = m.config
            md.append(f"| {m.label} | {m.source} | {fmt(m.iterations)} | {fmt(m.train_seconds, 0)} | "
                      f"{c.get('n_layers')} | {c.get('corrector')} | {c.get('width')} | {c.get('final_endpoint')} | "
                      f"{_rel(m.path, out)} |")
        md.append("")
    md_text = "\n".join(md)
    csv_text = _csv_text(report.columns, report.rows)
    summary = {"experiment": ctx.name, "title": report.title, "settings": asdict(s), "frames": ctx.frames,
               "size": ctx.size, "split": ctx.split_text, "elapsed_s": elapsed, "rows": report.rows,
               "notes": report.notes, "models": [asdict(m) for m in ctx.models],
               "videos": [{"path": str(v.path), "held_out": v.held_out, "label": v.label} for v in ctx.videos],
               "train_videos": [str(p) for p in ctx.train_videos],
               "files": [*report.figures, *(["pairs.csv"] if report.pair_rows else []), "results.json",
                         "results.md", "results.csv"]}
    out_set.path("results.json").write_text(json.dumps(_no_nan(summary), indent=2, default=str))
    out_set.path("results.md").write_text(md_text)
    out_set.path("results.csv").write_text(csv_text)
    return out_set.commit()


def _no_nan(x: Any) -> Any:
    """NaN becomes null: JSON has no NaN."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_no_nan(v) for v in x]
    return x


def _rel(path: str, root: Path) -> str:
    try:
        return os.path.relpath(path, root) if path != "-" else path
    except ValueError:
        return path
