"""Training configuration and presets.

A preset is a JSON file in ``centrifuge/presets`` (or any path) with two sections, ``model``
(:class:`centrifuge.model.ModelConfig`) and ``train`` (:class:`TrainConfig`). Command-line flags override
single fields.
"""

from __future__ import annotations

import json
import math
import types
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from .checkpoint import CONFIG
from .errors import CheckpointError
from .model import ModelConfig

#: The paper's schedule (Sec. 4.1): lr 0.1, then 0.05 / 0.025 / 0.01 at 100k / 150k / 200k of 240k.
PAPER_ITERATIONS = 240_000
PAPER_MILESTONES = (100_000, 150_000, 200_000)
PAPER_LR_FACTORS = (0.5, 0.25, 0.1)


@dataclass
class TrainConfig:
    """Everything that defines a training run except the network (see ``ModelConfig``)."""

    # data: folders/files of videos, or a Kinetics CSV (+ root folder)
    data: list[str] = field(default_factory=list)
    kinetics_csv: str | None = None
    kinetics_split: str | None = "train"
    file_list: str | None = None
    val_data: list[str] = field(default_factory=list)
    # still photos rendered into clips (centrifuge.synth): folders of photos and of cut-outs with alpha
    photos: list[str] = field(default_factory=list)
    cutouts: list[str] = field(default_factory=list)
    photo_fraction: float = 0.5  # probability that a layer is rendered from photos (1 without videos)
    reflection: float = 0.0  # share of blends made like a scene and its reflection (centrifuge.reflections)
    tone_match: float = 0.0  # share of blends whose layers share one colour statistics (centrifuge.tone_match)
    same_photo: float = 0.0  # share of blends of two clips of one photo on two camera paths (centrifuge.data)
    still_layer: float = 0.0  # share of blends with one layer frozen at one of its frames (centrifuge.data)
    motion_textures: float = 0.0  # share of blends of two textures that only motion splits (centrifuge.textures)
    tone_free_loss: float = 0.0  # weight of a tone-invariant Eq. 3 term in training's loss (centrifuge.losses)
    synth_motion: float = 0.0  # probability of non-rigid motion, and of parallax, in a photo clip (centrifuge.synth)
    synth_fast: float = 0.3  # probability that a moving photo clip's camera is fast (centrifuge.synth)
    synth_camera: float = 0.0  # probability of flicker, sensor noise and compression in a photo clip (camera_flaws)
    frames: int = 32
    size: int = 112
    resize_factor: float = 1.15
    videos_per_blend: int = 2
    alpha: float = 0.5
    alpha_range: tuple[float, float] | None = None
    frozen: bool = False
    augment: bool = False  # scale, camera motion, colour, frozen/reversed clips (centrifuge.augment)
    preload: bool = False
    workers: int = 4
    init: str | None = None  # start from these weights (run folder, .safetensors, or "default"): fine-tuning
    # optimisation (paper defaults)
    iterations: int = PAPER_ITERATIONS
    batch_size: int = 10  # global, over all ranks
    micro_batch: int | None = None  # per forward pass; gradient accumulation fills the rest
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.99
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = PAPER_MILESTONES
    lr_factors: tuple[float, ...] = PAPER_LR_FACTORS  # lr multipliers after each milestone
    schedule_reference: int = PAPER_ITERATIONS  # milestones are given for this many iterations
    grad_clip: float | None = None
    ema: float = 0.0  # decay of a moving average of the weights, saved as the run's model (0: none)
    # system
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    sync_bn: bool = False
    compile: bool = False
    compile_loss: bool = True  # torch.compile Eq. 2-3 for training (same loss, fused; eager if compiling fails)
    out: str = "runs/default"
    log_every: int = 10
    ckpt_every: int = 1000
    image_every: int = 500
    val_every: int = 0
    val_pairs: int = 16

    def lr_at(self, step: int) -> float:
        """Piecewise-constant learning rate, the paper's milestones scaled to ``iterations``."""
        scale = self.iterations / self.schedule_reference
        factor = 1.0
        for milestone, f in zip(self.milestones, self.lr_factors, strict=True):
            if step >= round(milestone * scale):
                factor = f
        return self.lr * factor


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` (as read from JSON) is of the annotated type ``hint``."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):  # JSON has no separate bool: true is not a number here
        return isinstance(value, hint if hint is int else (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args, strict=True))
        return all(_fits(v, args[0]) for v in value)
    return True


def _type_name(hint: Any) -> str:
    names = {int: "a whole number", float: "a number", bool: "true or false", str: "text", type(None): "null"}
    if hint in names:
        return names[hint]
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin in (list, tuple):
        n = "" if origin is list or (len(args) == 2 and args[1] is Ellipsis) else f"{len(args)} "
        return f"a list of {n}{_type_name(args[0]).removeprefix('a ')}s"
    return str(hint)


def check_fields(cls: type, values: Any, section: str) -> None:
    """``ValueError`` naming the field if ``values`` (a preset or config section) has a key or type ``cls`` lacks."""
    if not isinstance(values, dict):
        raise ValueError(f"{section} must be a JSON object of settings, got {type(values).__name__}")
    hints = get_type_hints(cls)
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown {section} keys: {', '.join(unknown)}")
    for name, value in values.items():
        if not _fits(value, hints[name]):
            raise ValueError(f"{section}.{name} must be {_type_name(hints[name])}, got {json.dumps(value)}")


def _from_dict(cls: type, values: dict[str, Any], section: str) -> Any:
    check_fields(cls, values, section)
    values = {k: tuple(v) if isinstance(v, list) and k in {"milestones", "lr_factors", "alpha_range"} else v
              for k, v in values.items()}
    return cls(**values)


def train_config_from_dict(values: dict[str, Any]) -> TrainConfig:
    cfg = _from_dict(TrainConfig, values, "train")
    validate_train_config(cfg)
    return cfg


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


# TrainConfig fields that are a probability or a share of the blends
_SHARES = ("photo_fraction", "synth_motion", "synth_fast", "synth_camera", "reflection", "tone_match", "same_photo",
           "still_layer", "motion_textures")


def validate_train_config(cfg: TrainConfig) -> None:
    """``ValueError`` naming the setting (as its flag) if a value cannot work; before any work is done."""
    for name, hint in get_type_hints(TrainConfig).items():
        if not _fits(getattr(cfg, name), hint):
            raise ValueError(f"{_flag(name)} (train.{name}) must be {_type_name(hint)}, got {getattr(cfg, name)!r}")
    at_least = {"iterations": 1, "batch_size": 1, "micro_batch": 1, "frames": 1, "size": 8, "videos_per_blend": 2,
                "schedule_reference": 1, "log_every": 1, "ckpt_every": 1, "workers": 0, "image_every": 0,
                "val_every": 0, "val_pairs": 0}
    for name, low in at_least.items():
        value = getattr(cfg, name)
        if value is not None and value < low:
            raise ValueError(f"{_flag(name)} {value} (train.{name}) must be at least {low}")
    for name in ("lr", "momentum", "weight_decay", "grad_clip", "alpha", "resize_factor", "ema", "tone_free_loss",
                 *_SHARES):
        value = getattr(cfg, name)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{_flag(name)} {value} (train.{name}) must be a finite number")
    if not 0 < cfg.alpha < 1:
        raise ValueError(f"--alpha {cfg.alpha} (train.alpha, Eq. 1) must lie strictly between 0 and 1")
    for name in _SHARES:
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"{_flag(name)} {getattr(cfg, name)}: must be in [0, 1] (train.{name})")
    if cfg.same_photo and (cfg.videos_per_blend != 2 or not cfg.photos):
        raise ValueError(f"--same-photo {cfg.same_photo} (train.same_photo) needs --photos and two videos per blend")
    if cfg.motion_textures and cfg.videos_per_blend != 2:
        raise ValueError(f"--motion-textures {cfg.motion_textures} (train.motion_textures) needs two videos per blend")
    if cfg.reflection and cfg.videos_per_blend != 2:
        raise ValueError(f"--reflection {cfg.reflection} (train.reflection) needs two videos per blend, "
                         f"not {cfg.videos_per_blend}")
    if cfg.alpha_range is not None and not 0 <= cfg.alpha_range[0] <= cfg.alpha_range[1] <= 1:
        raise ValueError(f"--alpha-range {cfg.alpha_range} (train.alpha_range) must satisfy 0 <= A <= B <= 1")
    if cfg.lr < 0 or cfg.weight_decay < 0 or not 0 <= cfg.momentum < 1:
        raise ValueError(f"need --lr >= 0, --weight-decay >= 0 and 0 <= --momentum < 1 (train.lr, train.weight_decay, "
                         f"train.momentum), got {cfg.lr}, {cfg.weight_decay}, {cfg.momentum}")
    if cfg.grad_clip is not None and cfg.grad_clip < 0:
        raise ValueError(f"--grad-clip {cfg.grad_clip} (train.grad_clip) must be positive (or unset)")
    if cfg.resize_factor < 1.0:
        raise ValueError(f"--resize-factor {cfg.resize_factor}: the crop must fit, so it must be at least 1.0")
    if cfg.tone_free_loss < 0:
        raise ValueError(f"--tone-free-loss {cfg.tone_free_loss} (train.tone_free_loss) must be at least 0")
    if cfg.ema and not 0 < cfg.ema < 1:
        raise ValueError(f"--ema {cfg.ema}: the decay must lie strictly between 0 and 1 (e.g. 0.99)")
    if len(cfg.milestones) != len(cfg.lr_factors):
        raise ValueError(f"train.milestones ({len(cfg.milestones)}) and train.lr_factors ({len(cfg.lr_factors)}) "
                         "must be of the same length")
    choices = {"optimizer": ("sgd", "adamw"), "precision": ("auto", "fp32", "bf16", "fp16")}
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{_flag(name)} {getattr(cfg, name)!r} (train.{name}): choose from {', '.join(allowed)}")


def _presets_dir() -> Any:
    return resources.files("centrifuge").joinpath("presets")


def list_presets() -> list[str]:
    """Names of the presets shipped with the package."""
    return sorted(p.name[:-5] for p in _presets_dir().iterdir() if p.name.endswith(".json"))


def load_preset(name_or_path: str) -> tuple[ModelConfig, TrainConfig]:
    """Load a shipped preset by name (e.g. ``paper-112``) or a JSON file by path."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.exists():
        text = path.read_text()
    else:
        res = _presets_dir().joinpath(f"{name_or_path}.json")
        if not res.is_file():
            raise ValueError(f"unknown preset {name_or_path!r} (choose from {', '.join(list_presets())})")
        text = res.read_text()
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object with 'model' and 'train' sections, got {type(raw).__name__}")
        unknown = sorted(set(raw) - {"description", "model", "train"})
        if unknown:
            raise ValueError(f"unknown sections: {', '.join(unknown)} (a preset has 'model' and 'train')")
        sections = {name: raw.get(name, {}) for name in ("model", "train")}
        check_fields(ModelConfig, sections["model"], "model")
        return ModelConfig.from_dict(sections["model"]), train_config_from_dict(sections["train"])
    except ValueError as e:  # also json's JSONDecodeError
        raise ValueError(f"preset {name_or_path}: {e}") from None


def config_to_dict(model: ModelConfig, train: TrainConfig) -> dict[str, Any]:
    return {"model": model.to_dict(), "train": asdict(train)}


def read_run_state(run_dir: str | Path) -> dict[str, Any]:
    """The saved ``config.json`` of a run folder: its configs and state (``step``, ``loss``...)."""
    try:
        return json.loads((Path(run_dir) / CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot resume from {run_dir}: unreadable {CONFIG} ({e})") from e


def read_run_config(run_dir: str | Path) -> tuple[ModelConfig, TrainConfig, dict[str, Any]]:
    """The model and training configs and the saved state (``step``, ``loss``...) of a run folder."""
    state = read_run_state(run_dir)
    try:
        return ModelConfig.from_dict(state["model"]), train_config_from_dict(state["train"]), state
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"cannot resume from {run_dir}: unreadable {CONFIG} ({e})") from e
