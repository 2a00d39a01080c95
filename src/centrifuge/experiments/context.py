"""One experiment run (:class:`Context`): its settings, split, clips, and the models it trains, reuses or loads
(trained models are cached by their settings)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import CONFIG, WEIGHTS, load_model, read_model_info
from ..config import load_preset
from ..errors import CentrifugeError
from ..model import ModelConfig, build_model
from ..sources import write_file_list
from .clips import ClipSet, choose_clip_pairs, load_clip_set
from .scoring import evaluate_pairs
from .settings import Settings, split_data

log = logging.getLogger("centrifuge")

#: Settings fields that do not change a trained model (left out of its cache key).
_NOT_IN_KEY = {"data", "kinetics_csv", "kinetics_split", "file_list", "val_data", "device", "precision", "workers",
               "out", "log_every", "ckpt_every", "image_every", "val_every", "val_pairs", "compile"}



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
        from ..devices import pick_device

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
