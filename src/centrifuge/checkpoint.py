"""Checkpoints: weights as safetensors (config embedded in its metadata), config/step as JSON, optimizer
state for exact resume. Loading never unpickles code: safetensors for weights, ``weights_only`` for the
optimizer state.

A run folder holds ``model.safetensors``, ``config.json`` and ``optimizer.pt``; a single
``.safetensors`` file is also a complete model (its metadata carries the model config). A run that keeps a
moving average of its weights (``--ema``) stores the average in ``model.safetensors``, the model every other
command reads, and the weights the optimizer is updating in ``live.safetensors``, which only resume reads.
"""

from __future__ import annotations

import json
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .model import ModelConfig, build_model

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
OPTIMIZER = "optimizer.pt"
LIVE_WEIGHTS = "live.safetensors"
DEFAULT_MODEL_NAME = "default.safetensors"


class CheckpointError(Exception):
    """A checkpoint that cannot be read; the message is for the user."""


def atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder and rename, so no half-written file is left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a saved file should have the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module under DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_weights(path: str | Path, model: torch.nn.Module, model_cfg: ModelConfig,
                 extra: dict[str, Any] | None = None) -> None:
    """Save a self-contained model: tensors + ``centrifuge_config`` (and ``extra``) JSON in the metadata."""
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    meta = {"centrifuge_config": json.dumps(model_cfg.to_dict())}
    if extra:
        meta["centrifuge_info"] = json.dumps(extra)
    atomic_write(Path(path), lambda tmp: save_file(state, tmp, metadata=meta))


def save_checkpoint(run_dir: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    model_cfg: ModelConfig, state: dict[str, Any], average: torch.nn.Module | None = None) -> None:
    """Write weights, optimizer state and ``config.json`` (config + ``step`` + anything in ``state``).

    With ``average`` (a moving average of ``model``), the average goes to ``model.safetensors`` and ``model``
    to ``live.safetensors``.
    """
    run_dir = Path(run_dir)
    train = state.get("train") or {}
    # the clip geometry travels with the weights: separation uses it for its window and working size
    info = {"step": state.get("step"), "train": {k: train[k] for k in ("frames", "size") if k in train}}
    if average is not None:
        save_weights(run_dir / LIVE_WEIGHTS, model, model_cfg, info)
    save_weights(run_dir / WEIGHTS, model if average is None else average, model_cfg, info)
    atomic_write(run_dir / OPTIMIZER, lambda tmp: torch.save(optimizer.state_dict(), tmp))
    atomic_write(run_dir / CONFIG, lambda tmp: Path(tmp).write_text(json.dumps(state, indent=2)))


def default_model_path() -> Path:
    """The model shipped inside the package."""
    return Path(str(resources.files("centrifuge").joinpath("weights", DEFAULT_MODEL_NAME)))


def _weights_file(path: str | Path | None) -> Path:
    if path is None:
        p = default_model_path()
        if not p.is_file():
            raise CheckpointError("no default model is installed with this package; pass --model PATH")
        return p
    p = Path(path)
    if p.is_dir():
        p = p / WEIGHTS
    if not p.exists():
        raise CheckpointError(f"no such model: {path}")
    return p


def read_model_info(path: str | Path | None = None) -> tuple[ModelConfig, dict[str, Any], Path]:
    """Model config and the ``centrifuge_info`` metadata of a weights file, without loading tensors."""
    p = _weights_file(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        cfg = ModelConfig.from_dict(json.loads(meta["centrifuge_config"]))
        info = json.loads(meta.get("centrifuge_info", "{}"))
    except (SafetensorError, OSError, KeyError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"not a centrifuge model (unreadable checkpoint): {p} ({type(e).__name__})") from e
    return cfg, info, p


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Build and load a model for inference (``eval()`` mode: BatchNorm uses its moving averages).

    ``path``: a ``.safetensors`` file, a run folder, or ``None`` for the packaged default model.
    Returns ``(model, info)`` with ``info`` holding ``config``, ``path`` and the saved metadata.
    """
    cfg, info, p = read_model_info(path)
    model = build_model(cfg)
    try:
        state = load_file(str(p))
        model.load_state_dict(state)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"unreadable checkpoint: {p} ({str(e).splitlines()[0][:200]})") from e
    model.to(device).eval()
    return model, {"config": cfg.to_dict(), "path": str(p), **info}


def load_training_state(run_dir: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                        average: torch.nn.Module | None = None) -> dict[str, Any]:
    """Restore weights and optimizer state from a run folder; returns the saved ``config.json`` state.

    With ``average``, the moving average is restored into it and the live weights into ``model``.
    """
    run_dir = Path(run_dir)
    try:
        state = json.loads((run_dir / CONFIG).read_text())
        unwrap(model).load_state_dict(load_file(str(run_dir / (WEIGHTS if average is None else LIVE_WEIGHTS))))
        if average is not None:
            unwrap(average).load_state_dict(load_file(str(run_dir / WEIGHTS)))
        if optimizer is not None and (run_dir / OPTIMIZER).exists():
            optimizer.load_state_dict(torch.load(run_dir / OPTIMIZER, map_location="cpu", weights_only=True))
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"cannot resume from {run_dir}: {str(e).splitlines()[0][:200]}") from e
    return state
