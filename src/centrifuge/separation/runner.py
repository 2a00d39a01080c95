"""Run: the model on one window. Loading it, the geometry it runs at (window, overlap, inference size, tiles),
the memory check, and the prepared network (:func:`centrifuge.inference.prepare_for_inference`: BatchNorm
folded, channels-last, the requested precision; its layers come out in float32 and the standard layout).

Resolution: frames whose shortest side exceeds twice the model's training crop size (112 when unknown) are
processed with their shortest side at twice that size: a compromise between the scale the model was trained at
(whole frames resized to about the crop size) and detail, at a cost that stays bounded for large videos;
``size`` overrides. ``tile`` instead runs the model on overlapping spatial tiles at full resolution (or at
``size`` if given).

Backend: PyTorch runs weights (the default); ONNX Runtime runs a file written by ``centrifuge export``
(:mod:`centrifuge.backends`), through the same windows, stitching and everything after.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..checkpoint import load_model
from ..config import read_run_state
from ..devices import check_precision, pick_device
from ..errors import CentrifugeError, CheckpointError
from ..frames import resize, scaled_size, to_model
from ..inference import prepare_for_inference
from ..memory import check_fits, largest_activation
from ..model import build_model
from .stitch import stitch_tiles
from .windows import pingpong

__all__ = ["DEFAULT_WINDOW", "MIN_SIZE", "Geometry", "ModelRunner", "load_runner"]

DEFAULT_WINDOW = 32
DEFAULT_TRAIN_SIZE = 112
#: The smallest shortest side the model is run at: smaller videos are enlarged to it, and --size may not go below.
MIN_SIZE = 8


@dataclass(frozen=True)
class Geometry:
    """Where and how much the model sees: windows of ``window`` frames every ``hop``, at ``size`` (w, h)."""

    window: int
    overlap: int
    size: tuple[int, int]  # inference (width, height)
    full: tuple[int, int]  # the input's (width, height)
    tile: int | None
    auto_size: bool

    @property
    def hop(self) -> int:
        return self.window - self.overlap

    @property
    def resized(self) -> bool:
        return self.size != self.full


def training_geometry(info: dict[str, Any]) -> tuple[int | None, int | None]:
    """(clip frames, crop size) the model was trained at, from its metadata or its run folder's config.json."""
    sources: list[dict[str, Any]] = [info, info.get("train") or {}]
    path = info.get("path")
    if path and (Path(path).parent / "config.json").is_file():
        with contextlib.suppress(CheckpointError):
            sources.append(read_run_state(Path(path).parent).get("train") or {})
    frames = next((int(s["frames"]) for s in sources if isinstance(s.get("frames"), int)), None)
    size = next((int(s["size"]) for s in sources if isinstance(s.get("size"), int)), None)
    return frames, size


def plan_geometry(width: int, height: int, trained: tuple[int | None, int | None], window: int | None,
                  overlap: int | None, size: int | None, tile: int | bool | None) -> Geometry:
    """The geometry asked for, with the defaults the model's training (``trained``: frames, size) gives."""
    train_frames, train_size = trained
    window = window or train_frames or DEFAULT_WINDOW
    overlap = window // 4 if overlap is None else overlap
    if window < 1 or not 0 <= overlap < window:
        raise CentrifugeError(f"need window >= 1 and 0 <= overlap < window, got window {window}, overlap {overlap}")
    ref_size = train_size or DEFAULT_TRAIN_SIZE
    tile_size: int | None = None
    if tile:
        tile_size = 2 * ref_size if tile is True else int(tile)
        if tile_size < 8:
            raise CentrifugeError(f"tile size must be at least 8 pixels, got {tile_size}")
    auto_size = size is None and tile_size is None and min(width, height) > 2 * ref_size
    proc_size = 2 * ref_size if auto_size else size
    if proc_size is None and tile_size is None and min(width, height) < MIN_SIZE:
        proc_size = MIN_SIZE  # a tiny video is enlarged for the model: Eq. 3 needs neighbouring pixels
    return Geometry(window, overlap, scaled_size(width, height, proc_size), (width, height), tile_size, auto_size)


def _check_memory(model: nn.Module, measure: bool, device: torch.device, n: int, g: Geometry) -> None:
    """Refuse a window that cannot fit (``centrifuge.memory``): its frames, the model's input and outputs, and
    (``measure``: for a model we loaded; a caller's module is not run on a probe) its largest activation, one
    tile at a time."""
    pw, ph = g.size
    th, tw = (min(g.tile, ph), min(g.tile, pw)) if g.tile else (ph, pw)
    act = largest_activation(model) if measure else 0.0
    needed = g.window * (3 * g.full[0] * g.full[1] + 4 * (3 * (1 + n) * pw * ph + act * th * tw))
    check_fits(needed, device, f"separating at {pw}x{ph} pixels in windows of {g.window} frames",
               "lower --size or --window, or use --tile")


class ModelRunner:
    """The prepared model on one window: ``runner(clip)`` -> layers ``[n, 3, len(clip), h, w]`` (float32, CPU).
    ``model`` is a PyTorch module, or for ``backend="onnxruntime"`` an already loaded
    :class:`~centrifuge.backends.OnnxRuntimeModel`."""

    def __init__(self, model: Any, info: dict[str, Any], trained: tuple[int | None, int | None],
                 device: torch.device, precision: str, geometry: Geometry, copy: bool, backend: str = "pytorch"):
        # A model passed in by the caller is copied (folding BatchNorm changes it); one we loaded is ours.
        self.model = model if backend == "onnxruntime" else prepare_for_inference(model, device, precision,
                                                                                 inplace=not copy)
        self.info, self.trained, self.device, self.geometry, self.backend = info, trained, device, geometry, backend
        self.dtype = str(self.model.dtype).replace("torch.", "")
        self.tiles_per_window = 1
        self.last_input: Tensor | None = None  # [3, T, h, w]: the last clip as the model was given it

    def _forward(self, x: Tensor) -> Tensor:
        y = self.model(x[None])
        if not isinstance(y, Tensor) or y.dim() != 6 or y.shape[2] != 3:
            raise CentrifugeError("the model must return layers [B, n, 3, T, H, W]")
        # No copy for the prepared network nor ONNX Runtime: both hand on float32 CPU layers in the standard
        # layout, which is what stitching, the store and the statistics read fastest.
        return y[0].float().cpu()

    def __call__(self, clip: list[np.ndarray]) -> Tensor:
        length, window = len(clip), self.geometry.window
        x = np.stack(clip)
        if length < window:  # only a video shorter than one window
            x = x[pingpong(length, window)]
        pw, ph = self.geometry.size
        x = resize(to_model(x), (ph, pw))
        self.last_input = x[:, :length]  # the composition reuses the input at the inference size
        with torch.inference_mode():
            if not self.geometry.tile:
                y = self._forward(x)
            else:
                y, self.tiles_per_window = stitch_tiles(self._forward, x, self.geometry.tile)
        return y[:, :, :length]


def load_runner(model: None | str | os.PathLike[str] | nn.Module, device: str, precision: str,
                full: tuple[int, int], window: int | None, overlap: int | None, size: int | None,
                tile: int | bool | None, backend: str | None = None) -> ModelRunner:
    """Load ``model`` (a file, run folder, module or None for the packaged one) and plan how it runs;
    ``backend``: :func:`centrifuge.backends.choose_backend`."""
    from ..backends import choose_backend, load_onnx

    backend = choose_backend(model, backend)
    check_precision(precision)
    run = None
    if backend == "onnxruntime":
        run, info = load_onnx(model, device, precision)  # type: ignore[arg-type]
        dev, net = torch.device("cpu"), build_model(info["config"])  # its architecture: n and the memory check
    else:
        dev = pick_device(device)
        net, info = (model, {"path": None, "config": None}) if isinstance(model, nn.Module) else load_model(model, dev)
    n = getattr(net, "n_layers", None)
    if n is not None and n < 2:
        raise CentrifugeError(f"the model has {n} output layer; separation needs at least 2")
    trained = training_geometry(info)
    geometry = plan_geometry(*full, trained, window, overlap, size, tile)
    _check_memory(net, not isinstance(model, nn.Module), dev, n or 2, geometry)
    return ModelRunner(net if run is None else run, info, trained, dev, precision, geometry,
                       copy=isinstance(model, nn.Module), backend=backend)
