"""Checkpoints: weights as safetensors (config embedded in its metadata), config/step as JSON, optimizer
state for exact resume. Loading never unpickles code: safetensors for weights, ``weights_only`` for the
optimizer state.

A run folder holds ``model.safetensors``, ``config.json`` and ``optimizer.pt``; a single
``.safetensors`` file is also a complete model (its metadata carries the model config). A run that keeps a
moving average of its weights (``--ema``) stores the average in ``model.safetensors``, the model every other
command reads, and the weights the optimizer is updating in ``live.safetensors``, which only resume reads.

A checkpoint is committed as one unit: its files are written into ``.checkpoint.part/`` and synced, that folder
is renamed to ``.checkpoint.next/`` (the commit: from then on the new checkpoint is complete on disk), and its
files are then moved over the run folder's, ``config.json`` last. Whoever opens the run folder next (holding
its lock: ``centrifuge.locks``) finishes those moves if they were interrupted and removes an uncommitted
``.checkpoint.part/``: a kill at any moment resumes from the previous checkpoint or from the new one, never
from a mix. Run folders written before this scheme resume as before; their weights must be of the step that
``config.json`` records.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .errors import CheckpointError
from .model import ModelConfig, build_model

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
OPTIMIZER = "optimizer.pt"
LIVE_WEIGHTS = "live.safetensors"
DEFAULT_MODEL_NAME = "default.safetensors"
STAGING = ".checkpoint.part"  # a checkpoint being written: incomplete until renamed to COMMITTED
COMMITTED = ".checkpoint.next"  # a complete checkpoint whose files are being moved into the run folder
#: The order in which a committed checkpoint's files replace the run folder's: config.json (the step) last.
CHECKPOINT_FILES = (WEIGHTS, LIVE_WEIGHTS, OPTIMIZER, CONFIG)


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


def _weights_writer(model: torch.nn.Module, model_cfg: ModelConfig, extra: dict[str, Any] | None) -> Any:
    """A function writing ``model``'s tensors, with the config (and ``extra``) in the metadata, to a path."""
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    meta = {"centrifuge_config": json.dumps(model_cfg.to_dict())}
    if extra:
        meta["centrifuge_info"] = json.dumps(extra)
    return lambda path: save_file(state, str(path), metadata=meta)


def save_weights(path: str | Path, model: torch.nn.Module, model_cfg: ModelConfig,
                 extra: dict[str, Any] | None = None) -> None:
    """Save a self-contained model: tensors + ``centrifuge_config`` (and ``extra``) JSON in the metadata."""
    atomic_write(Path(path), _weights_writer(model, model_cfg, extra))


def fsync(path: str | Path) -> None:
    """Flush a file or folder (its entries: renames into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    model_cfg: ModelConfig, state: dict[str, Any], average: torch.nn.Module | None = None) -> None:
    """Write weights, optimizer state and ``config.json`` (config + ``step`` + anything in ``state``) as one unit.

    With ``average`` (a moving average of ``model``), the average goes to ``model.safetensors`` and ``model``
    to ``live.safetensors``. The caller holds the run folder (``centrifuge.locks.hold_folder``).
    """
    run_dir = Path(run_dir)
    recover_checkpoint(run_dir)
    train = state.get("train") or {}
    # the clip geometry travels with the weights: separation uses it for its window and working size
    info = {"step": state.get("step"), "train": {k: train[k] for k in ("frames", "size") if k in train}}
    writers = {WEIGHTS: _weights_writer(model if average is None else average, model_cfg, info),
               OPTIMIZER: lambda path: torch.save(optimizer.state_dict(), path),
               CONFIG: lambda path: Path(path).write_text(json.dumps(state, indent=2))}
    if average is not None:
        writers[LIVE_WEIGHTS] = _weights_writer(model, model_cfg, info)
    staging = run_dir / STAGING
    staging.mkdir(parents=True)
    for name in CHECKPOINT_FILES:
        if name in writers:
            writers[name](staging / name)
            fsync(staging / name)
    fsync(staging)
    os.rename(staging, run_dir / COMMITTED)  # the commit
    fsync(run_dir)
    _roll_forward(run_dir)


def _roll_forward(run_dir: Path) -> None:
    """Move a committed checkpoint's files over the run folder's (again, after a kill: each move is atomic)."""
    committed = run_dir / COMMITTED
    for name in CHECKPOINT_FILES:
        if (committed / name).exists():
            os.replace(committed / name, run_dir / name)
    fsync(run_dir)
    committed.rmdir()


def recover_checkpoint(run_dir: str | Path) -> None:
    """Finish a committed checkpoint and drop an uncommitted one and stale temporary files of a killed write.

    Only for the holder of the run folder's lock: another live run's temporary files would look stale too.
    """
    run_dir = Path(run_dir)
    if (run_dir / COMMITTED).is_dir():
        _roll_forward(run_dir)
    if (run_dir / STAGING).exists():
        shutil.rmtree(run_dir / STAGING)
    for name in CHECKPOINT_FILES:  # left by earlier versions, which wrote each file through its own temporary
        for part in run_dir.glob(f".{name}.*.part"):
            part.unlink(missing_ok=True)


def remove_checkpoint(run_dir: str | Path) -> None:
    """Delete a run folder's checkpoint (committed, in progress, or stale), e.g. before starting afresh."""
    run_dir = Path(run_dir)
    for name in (STAGING, COMMITTED):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    recover_checkpoint(run_dir)
    for name in CHECKPOINT_FILES:
        (run_dir / name).unlink(missing_ok=True)


DEFAULT_NAME = "default"


def default_model_path() -> Path:
    """The model shipped inside the package."""
    return Path(str(resources.files("centrifuge").joinpath("weights", DEFAULT_MODEL_NAME)))


def _weights_file(path: str | Path | None) -> Path:
    # "default" names the packaged model wherever a model is read (--model, --init, export), unless a folder
    # or file of that name is in the working directory.
    if path is None or (str(path) == DEFAULT_NAME and not Path(path).exists()):
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

    ``path``: a ``.safetensors`` file, a run folder, or ``None`` or ``"default"`` for the packaged default model.
    Returns ``(model, info)`` with ``info`` holding ``config``, ``path`` and the saved metadata.
    """
    cfg, info, p = read_model_info(path)
    model = build_model(cfg)
    try:
        state = load_file(str(p))
        model.load_state_dict(state)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"unreadable checkpoint: {p} ({str(e).splitlines()[0][:200]})") from e
    check_finite(state, p)
    model.to(device).eval()
    return model, {"config": cfg.to_dict(), "path": str(p), **info}


def check_finite(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """:class:`CheckpointError` if a floating-point tensor holds NaN or infinity (a diverged run's weights)."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"the model {path} has non-finite weights (NaN or infinity) in {name}")


def _saved_step(path: Path) -> Any:
    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("centrifuge_info", "{}")).get("step")


def load_training_state(run_dir: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                        average: torch.nn.Module | None = None) -> dict[str, Any]:
    """Restore weights and optimizer state from a run folder; returns the saved ``config.json`` state.

    With ``average``, the moving average is restored into it and the live weights into ``model``.
    """
    run_dir = Path(run_dir)
    recover_checkpoint(run_dir)
    try:
        state = json.loads((run_dir / CONFIG).read_text())
        weights = [WEIGHTS] if average is None else [LIVE_WEIGHTS, WEIGHTS]
        for name in weights:
            # a run folder of an earlier version, killed between its files, can hold weights of another step
            step = _saved_step(run_dir / name)
            if step is not None and step != state.get("step"):
                raise CheckpointError(f"cannot resume from {run_dir}: {name} is of step {step} but {CONFIG} of "
                                      f"step {state.get('step')} (a checkpoint write was interrupted); "
                                      "start afresh with --overwrite")
        unwrap(model).load_state_dict(load_file(str(run_dir / weights[0])))
        if average is not None:
            unwrap(average).load_state_dict(load_file(str(run_dir / WEIGHTS)))
        if optimizer is not None and (run_dir / OPTIMIZER).exists():
            optimizer.load_state_dict(torch.load(run_dir / OPTIMIZER, map_location="cpu", weights_only=True))
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"cannot resume from {run_dir}: {str(e).splitlines()[0][:200]}") from e
    return state
