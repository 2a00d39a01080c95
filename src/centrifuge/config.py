"""Training configuration and presets.

A preset is a JSON file in ``centrifuge/presets`` (or any path) with two sections, ``model``
(:class:`centrifuge.model.ModelConfig`) and ``train`` (:class:`TrainConfig`). Command-line flags override
single fields.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

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


def _from_dict(cls: type, values: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
    values = {k: tuple(v) if isinstance(v, list) and k in {"milestones", "lr_factors", "alpha_range"} else v
              for k, v in values.items()}
    return cls(**values)


def train_config_from_dict(values: dict[str, Any]) -> TrainConfig:
    return _from_dict(TrainConfig, values)


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
    raw = json.loads(text)
    return ModelConfig.from_dict(raw.get("model", {})), train_config_from_dict(raw.get("train", {}))


def config_to_dict(model: ModelConfig, train: TrainConfig) -> dict[str, Any]:
    return {"model": model.to_dict(), "train": asdict(train)}
