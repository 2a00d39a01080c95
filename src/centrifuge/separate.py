"""Sec. 5: separate a real video into layers, window by window, in memory that does not grow with its length.

Pipeline (one pass over the video):

1. **Decode** frames as they come (:func:`centrifuge.video.iter_frames`); only the current window and its
   overlap stay in memory.
2. **Infer** (the network prepared by :func:`centrifuge.inference.prepare_for_inference`) on windows of
   ``window`` frames (default: the model's training clip length when the checkpoint records it, else 32)
   that start every ``window - overlap`` frames (default overlap ``window // 4``). The last window is moved
   back so that it ends on the last frame (it then overlaps its predecessor more); a video shorter than one
   window is padded by ping-pong repetition of its frames and cropped back.
3. **Stitch** (:class:`WindowStitcher`): the model's output slots are arbitrary, so each window's layers are
   permuted to best match the previous window's on their shared frames (the permutation minimising the
   summed Eq. 3 distance, as in the PIT loss, compared at a shortest side of 64 pixels), then the overlap is
   cross-faded with a linear ramp. Without this a layer would jump between slots mid-video.
4. **Compose and encode**: layers are brought back to the input resolution and written as H.264, one file
   per model slot, while per-layer statistics, the pairwise layer distances (for the most dissimilar pair,
   Sec. 3.2) and recomposition errors are accumulated on every 4th frame.
5. **Finish**: the two most dissimilar layers over the whole video are chosen, ``preview.mp4`` (input and the
   chosen layers side by side, re-read from the files just written) and ``contact.png`` are made, and
   ``layers.json`` records everything.

Resolution
    Frames whose shortest side exceeds twice the model's training crop size (112 when unknown) are processed
    with their shortest side at twice that size: a compromise between the scale the model was trained at
    (whole frames resized to about the crop size) and detail, at a cost that stays bounded for large videos;
    ``size`` overrides. Predicted layers are upsampled (bilinear) to the input resolution and, with ``detail=True``
    (default), the input's high-frequency residual ``V - up(down(V))`` is added to every layer. Since the
    blend model is ``V = (V1 + V2) / 2``, adding the same residual to each layer keeps the layers recomposing
    the full-resolution input exactly as well as they recompose the low-resolution one; the price is that
    fine detail (edges, texture) of both layers appears in each. ``detail=False`` gives soft layers.
    ``tile`` instead runs the model on overlapping spatial tiles at full resolution (or at ``size`` if given),
    matches each tile's slots to the tiles already placed, and blends them with feathered (linear ramp)
    weights.

Outputs
    ``layer_i.mp4`` have the input's frame count, size and (average) frame rate; H.264 4:2:0 for even sizes,
    4:4:4 for odd ones (4:2:0 cannot store them without padding). Rotation metadata is applied on reading,
    so outputs are upright and carry no rotation.

Safety
    The output folder is locked for the run; all files are written into a hidden temporary folder and published
    only after the whole run succeeded, by one rename of the whole folder (new or empty output folder) or with
    ``layers.json`` moved in last as the mark of a finished set (``--overwrite`` into a non-empty folder), so an
    interrupted run leaves no ``layer_*.mp4``, ``preview.mp4``, ``contact.png`` or ``layers.json`` behind (see
    :class:`_Output` and docs/reliability.md). The input is only read, and a run that would replace it is refused.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import fsync
from .data import to_model
from .errors import CentrifugeError
from .locks import hold_folder
from .losses import pairwise_loss, pit_from_matrix, reconstruction_loss
from .memory import check_fits, largest_activation
from .train import pick_device
from .video import VideoWriter, check_video, iter_frames

__all__ = ["SeparationResult", "WindowStitcher", "match_slots", "separate", "DEFAULT_WINDOW"]

DEFAULT_WINDOW = 32
DEFAULT_TRAIN_SIZE = 112
#: The smallest shortest side the model is run at: smaller videos are enlarged to it, and --size may not go below.
MIN_SIZE = 8
DEFAULT_FPS = 25.0
LAYER_NAME = "layer_{}.mp4"
PREVIEW_NAME = "preview.mp4"
CONTACT_NAME = "contact.png"
META_NAME = "layers.json"
_TMP_PREFIX = ".separate-"
_TMP_SUFFIX = ".part"
#: The names of the files this tool writes into an output folder (the only ones --overwrite may replace).
_OUTPUT_RE = re.compile(r"layer_\d+\.mp4|preview\.mp4|contact\.png|layers\.json")
_CONTACT_ROWS = 4
_CONTACT_CELL_H = 128
_PREVIEW_MAX_H = 360
_PREVIEW_MAX_W = 640
_LABEL_H = 18
# H.264 settings of the outputs: visually lossless, and "veryfast" because n files are encoded per run.
_CRF = 18
_X264_PRESET = "veryfast"
# Full-resolution composition and the preview work on chunks of at most this many float32 values: the
# temporaries set the peak memory, and small ones are also faster (less page-fault churn).
_COMPOSE_BUDGET = 6_000_000
# Statistics, layer distances and recomposition errors are measured on every 4th frame (0, 4, 8, ...):
# consecutive frames are nearly identical, and on every frame they cost more than the inference.
_STATS_STRIDE = 4


@dataclass
class SeparationResult:
    """What :func:`separate` returns.

    ``layers``: ``uint8 [k, T, H, W, 3]`` (``k = 2`` for ``layers="best2"``, else the model's ``n``) when the
    result is kept in memory: always for a frames array, and for a file when ``out_dir`` is None. For a file
    with ``out_dir`` the layers are streamed to disk and ``layers`` is None.
    ``order``: the model slot of each returned/written layer (``layer_i.mp4`` is slot ``order[i]``).
    ``chosen``: the two slots that are most dissimilar over the whole video (Sec. 3.2).
    ``metadata``: the content of ``layers.json``. ``files``: final paths written (empty without ``out_dir``).
    """

    layers: np.ndarray | None
    order: list[int]
    chosen: tuple[int, int]
    metadata: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------
# slot matching and stitching


def _assign(matrix: Tensor) -> list[int]:
    """Slot order ``perm`` minimising ``sum_j matrix[perm[j], j]`` (``matrix[i, j]``: output i vs reference j)."""
    n = matrix.shape[0]
    if n <= 8:
        return pit_from_matrix(matrix[None].float())[1][0].tolist()
    # n! is too many above 8; greedy on the smallest remaining distance is good enough for well-separated layers.
    perm = [-1] * n
    m = matrix.clone().float()
    for _ in range(n):
        flat = int(m.argmin())
        i, j = divmod(flat, n)
        perm[j] = i
        m[i, :] = float("inf")
        m[:, j] = float("inf")
    return perm


#: Slot matching compares layers with their shortest side reduced to at most this many pixels: choosing a
#: permutation needs no fine detail, and Eq. 3 at full inference size cost as much as a third of the run.
MATCH_SIZE = 64


def match_slots(reference: Tensor, outputs: Tensor) -> list[int]:
    """Permutation that aligns ``outputs`` with ``reference`` (both ``[n, 3, T, H, W]``, same frames).

    Returns ``perm`` such that ``outputs[perm]`` has, in slot ``j``, the output layer closest to
    ``reference[j]`` under the summed Eq. 3 distance (exhaustive over permutations for ``n <= 8``), computed
    with the shortest side reduced to :data:`MATCH_SIZE`.
    """
    h, w = reference.shape[-2:]
    if min(h, w) > MATCH_SIZE:
        hw = (max(1, round(h * MATCH_SIZE / min(h, w))), max(1, round(w * MATCH_SIZE / min(h, w))))
        reference, outputs = _resize(reference, hw), _resize(outputs, hw)
    return _assign(pairwise_loss(outputs[None].float(), reference[None].float())[0])


class WindowStitcher:
    """Joins per-window layer predictions into one video with a consistent slot order.

    Windows are added in order; each must start at the first frame not yet returned (the first frame of the
    kept tail). Its slots are permuted to match the tail (or, with no overlap, the previous window's last
    frame), the overlap is cross-faded with a linear ramp, and the first ``emit`` frames are returned as final.
    """

    def __init__(self) -> None:
        self.tail: Tensor | None = None  # blended frames of the previous window not returned yet
        self.last: Tensor | None = None  # last frame of the previous window, to match when there is no overlap
        self.windows = 0
        self.reordered = 0  # windows whose slots had to be permuted
        self.permutations: list[list[int]] = []

    def add(self, outputs: Tensor, emit: int) -> Tensor:
        """``outputs``: ``[n, 3, L, H, W]``; returns its first ``min(emit, L)`` frames after matching/blending."""
        if outputs.dim() != 5:
            raise ValueError(f"expected [n, 3, T, H, W], got {tuple(outputs.shape)}")
        n = outputs.shape[0]
        ov = 0 if self.tail is None else self.tail.shape[2]
        if ov > outputs.shape[2]:
            raise ValueError(f"window of {outputs.shape[2]} frames is shorter than the {ov}-frame overlap")
        perm = list(range(n))
        if self.last is not None:
            ref, cand = (self.tail, outputs[:, :, :ov]) if ov else (self.last, outputs[:, :, :1])
            perm = match_slots(ref, cand)
            if perm != list(range(n)):
                self.reordered += 1
                outputs = outputs[perm]
            if ov:
                ramp = torch.arange(1, ov + 1, dtype=outputs.dtype, device=outputs.device) / (ov + 1)
                ramp = ramp.view(1, 1, ov, 1, 1)
                blended = self.tail * (1 - ramp) + outputs[:, :, :ov] * ramp
                outputs = torch.cat([blended, outputs[:, :, ov:]], dim=2)
        self.permutations.append(perm)
        self.windows += 1
        emit = min(emit, outputs.shape[2])
        self.tail = outputs[:, :, emit:]
        self.last = outputs[:, :, -1:]
        return outputs[:, :, :emit]

    def flush(self) -> Tensor | None:
        """The kept tail (the end of the video); the stitcher is then empty."""
        tail, self.tail = self.tail, None
        return tail


def _pingpong(length: int, total: int) -> np.ndarray:
    """Indices ``0, 1, ..., length-1, length-2, ..., 0, 1, ...`` of size ``total`` (temporal reflection)."""
    if length == 1:
        return np.zeros(total, dtype=np.int64)
    period = 2 * (length - 1)
    i = np.arange(total) % period
    return np.where(i < length, i, period - i)


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _ramp(length: int, overlap: int) -> Tensor:
    """Feathering weights: rise linearly over ``overlap`` cells at both ends, 1 in the middle, never 0."""
    i = torch.arange(length, dtype=torch.float32)
    return (torch.minimum(i + 1, length - i) / (overlap + 1)).clamp(max=1.0)


# --------------------------------------------------------------------------------------------------------
# model, sizes


def _training_geometry(info: dict[str, Any]) -> tuple[int | None, int | None]:
    """(clip frames, crop size) the model was trained at, from its metadata or its run folder's config.json."""
    sources: list[dict[str, Any]] = [info, info.get("train") or {}]
    path = info.get("path")
    if path:
        cfg_file = Path(path).parent / "config.json"
        if cfg_file.is_file():
            with contextlib.suppress(OSError, ValueError):
                sources.append(json.loads(cfg_file.read_text()).get("train") or {})
    frames = next((int(s["frames"]) for s in sources if isinstance(s.get("frames"), int)), None)
    size = next((int(s["size"]) for s in sources if isinstance(s.get("size"), int)), None)
    return frames, size


def _load(model: None | str | os.PathLike[str] | nn.Module, device: torch.device) -> tuple[nn.Module, dict]:
    if isinstance(model, nn.Module):
        return model, {"path": None, "config": None}
    from .checkpoint import load_model

    return load_model(model, device)


def _check_precision(precision: str) -> str:
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise CentrifugeError(f"unknown precision {precision!r} (use fp32, bf16, fp16 or auto)")
    return precision


def _scaled_size(width: int, height: int, size: int | None) -> tuple[int, int]:
    """(width, height) with the shortest side ``size`` (aspect kept); unchanged for None."""
    if size is None:
        return width, height
    scale = size / min(width, height)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    return (size, h) if width <= height else (w, size)


def _resize(x: Tensor, hw: tuple[int, int]) -> Tensor:
    """Bilinear resize of the last two dimensions (antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == hw:
        return x
    # One channel per plane: interpolation is per plane anyway, and it is several times faster than [N, 3, H, W].
    planes = x.reshape(-1, 1, *x.shape[-2:])
    shrink = hw[0] < x.shape[-2] or hw[1] < x.shape[-1]
    y = F.interpolate(planes, size=hw, mode="bilinear", align_corners=False, antialias=shrink)
    return y.reshape(*x.shape[:-2], *hw)


def _check_memory(model: nn.Module, model_arg: Any, device: torch.device, n: int, window: int,
                  inference: tuple[int, int], full: tuple[int, int], tile: int | None) -> None:
    """Refuse a window that cannot fit (``centrifuge.memory``): its frames, the model's input and outputs, and
    (for a model we loaded: a caller's module is not run on a probe) its largest activation, one tile at a time."""
    pw, ph = inference
    th, tw = (min(tile, ph), min(tile, pw)) if tile else (ph, pw)
    act = 0.0 if isinstance(model_arg, nn.Module) else largest_activation(model)
    needed = window * (3 * full[0] * full[1] + 4 * (3 * (1 + n) * pw * ph + act * th * tw))
    check_fits(needed, device, f"separating at {pw}x{ph} pixels in windows of {window} frames",
               "lower --size or --window, or use --tile")


class _Runner:
    """Model forward on one window (whole frame or tiles), through :func:`centrifuge.inference.prepare_for_inference`
    (BatchNorm folded, channels-last, the requested precision)."""

    def __init__(self, model: nn.Module, device: torch.device, precision: str, tile: int | None, copy: bool):
        from .inference import prepare_for_inference

        # A model passed in by the caller is copied (folding BatchNorm changes it); one we loaded is ours.
        self.model = prepare_for_inference(model, device, precision, inplace=not copy)
        self.dtype = str(self.model.dtype).replace("torch.", "")
        self.tile = tile
        self.tiles_per_window = 1

    def _forward(self, x: Tensor) -> Tensor:
        y = self.model(x[None])
        if not isinstance(y, Tensor) or y.dim() != 6 or y.shape[2] != 3:
            raise CentrifugeError("the model must return layers [B, n, 3, T, H, W]")
        return y[0].float().cpu()

    def __call__(self, x: Tensor) -> Tensor:
        """``x``: ``[3, T, h, w]`` in [-1, 1] -> ``[n, 3, T, h, w]``."""
        with torch.inference_mode():
            if not self.tile:
                return self._forward(x)
            return self._tiled(x)

    def _tiled(self, x: Tensor) -> Tensor:
        _, t, h, w = x.shape
        th, tw = min(self.tile, h), min(self.tile, w)
        ov = self.tile // 4
        ys, xs = _tile_starts(h, th, ov), _tile_starts(w, tw, ov)
        self.tiles_per_window = len(ys) * len(xs)
        weight = (_ramp(th, ov)[:, None] * _ramp(tw, ov)[None, :])  # [th, tw]
        acc: Tensor | None = None
        wsum = torch.zeros(h, w)
        for r, y0 in enumerate(ys):
            for c, x0 in enumerate(xs):
                out = self._forward(x[:, :, y0:y0 + th, x0:x0 + tw])
                if acc is None:
                    acc = torch.zeros(out.shape[0], 3, t, h, w)
                else:
                    # Regions already covered in raster order: rows above (previous tile row) and columns to
                    # the left (previous tile in this row). Match slots on them before blending.
                    canvas = acc[..., y0:y0 + th, x0:x0 + tw] / wsum[y0:y0 + th, x0:x0 + tw].clamp_min(1e-8)
                    m = torch.zeros(out.shape[0], out.shape[0])
                    if r > 0:
                        rows = ys[r - 1] + th - y0
                        m += pairwise_loss(out[None, ..., :rows, :], canvas[None, ..., :rows, :])[0]
                    if c > 0:
                        cols = xs[c - 1] + tw - x0
                        m += pairwise_loss(out[None, ..., :cols], canvas[None, ..., :cols])[0]
                    out = out[_assign(m)]
                acc[..., y0:y0 + th, x0:x0 + tw] += out * weight
                wsum[y0:y0 + th, x0:x0 + tw] += weight
        assert acc is not None
        return acc / wsum


# --------------------------------------------------------------------------------------------------------
# output folder


class _Output:
    """Where a run's files are made until :meth:`commit` publishes them all at once.

    The output folder is locked for the whole run (``centrifuge.locks``), so temporary folders of other runs
    found in it are stale (their runs were killed) and are removed. A new or empty output folder is built
    whole beside it, in ``.NAME.separate-*.part``, and :meth:`commit` renames that folder over it: a reader sees
    all the outputs or none. Into a non-empty folder (``overwrite``), files are made in a hidden
    ``.separate-*.part`` folder inside it, and :meth:`commit` removes the old ``layers.json`` first and moves the
    new one in last, so ``layers.json`` marks a finished set. Only the tool's own files are replaced or removed:
    the names written now, and the outputs the previous ``layers.json`` lists.
    """

    def __init__(self, out_dir: str | os.PathLike[str], overwrite: bool, input_path: Path | None):
        # the folder itself is replaced at the commit, so work on the real path, not on a link to it
        self.dir = Path(os.path.realpath(out_dir))
        if self.dir.exists() and not self.dir.is_dir():
            raise CentrifugeError(f"output path exists and is not a folder: {out_dir}")
        self._hold = contextlib.ExitStack()
        try:
            self._hold.enter_context(hold_folder(self.dir, "output folder", remove_if_empty=True))
            self._remove_stale()
            entries = list(self.dir.iterdir())
            if entries and not overwrite:
                raise CentrifugeError(f"output folder is not empty: {out_dir} (pass --overwrite to replace)")
            self.previous = _listed_outputs(self.dir)
            if input_path is not None:
                self._refuse_input(input_path)
            self.whole = not entries and not os.path.ismount(self.dir) and os.access(self.dir.parent, os.W_OK)
            prefix = f".{self.dir.name}{_TMP_PREFIX}" if self.whole else _TMP_PREFIX
            self.tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=_TMP_SUFFIX,
                                             dir=self.dir.parent if self.whole else self.dir))
        except OSError as e:
            self._hold.close()
            raise CentrifugeError(f"cannot write to the output folder {out_dir}: {e.strerror or e}") from e
        except BaseException:
            self._hold.close()
            raise

    def _remove_stale(self) -> None:
        """Temporary folders of killed runs (a live run would hold the lock we hold)."""
        stale = [*self.dir.glob(f"{_TMP_PREFIX}*{_TMP_SUFFIX}"),
                 *self.dir.parent.glob(f".{glob.escape(self.dir.name)}{_TMP_PREFIX}*{_TMP_SUFFIX}")]
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)

    def _refuse_input(self, input_path: Path) -> None:
        """The input must not be (a link to) a file this run may replace or remove."""
        for path in self.dir.iterdir():
            if (path.name in self.previous or _OUTPUT_RE.fullmatch(path.name)) and path.is_file() \
                    and os.path.samefile(path, input_path):
                raise CentrifugeError(f"the input {input_path} is the output {path}; choose another -o")

    def path(self, name: str) -> Path:
        return self.tmp / name

    def write_json(self, name: str, data: Any) -> None:
        try:
            text = json.dumps(data, indent=2, allow_nan=False)
        except ValueError as e:  # a NaN figure is a bug upstream; refuse rather than write invalid JSON
            raise CentrifugeError(f"refusing to write {name}: a figure is not finite") from e
        self.path(name).write_text(text + "\n")

    def commit(self, names: dict[str, str]) -> dict[str, Path]:
        """Publish ``{temporary name: final name}`` (``layers.json`` among them) and release the folder."""
        for src in names:
            fsync(self.tmp / src)
        if self.whole:
            # final names inside the temporary folder first (no slot file has an output's name) ...
            for src, dst in names.items():
                os.rename(self.tmp / src, self.tmp / dst)
            for path in self.tmp.iterdir():
                if path.name not in names.values():
                    path.unlink()  # unchosen slots
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the output folder gets the usual permissions
            fsync(self.tmp)
            # ... then one rename publishes them all
            os.rename(self.tmp, self.dir)  # over the empty folder
        else:
            final = set(names.values())
            (self.dir / META_NAME).unlink(missing_ok=True)  # from here on the folder is not a finished set
            for old in self.previous - final:
                (self.dir / old).unlink(missing_ok=True)
            for src, dst in sorted(names.items(), key=lambda item: item[1] == META_NAME):
                os.replace(self.tmp / src, self.dir / dst)
            shutil.rmtree(self.tmp, ignore_errors=True)
        fsync(self.dir.parent if self.whole else self.dir)
        self._hold.close()
        return {dst: self.dir / dst for dst in names.values()}

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._hold.close()  # also removes the folder if this run made it and it is still empty


def _listed_outputs(folder: Path) -> set[str]:
    """The output files a previous run's ``layers.json`` lists (only names this tool writes)."""
    try:
        files = json.loads((folder / META_NAME).read_text()).get("files") or {}
        names = [*files.get("layers", []), files.get("preview"), files.get("contact"), META_NAME]
    except (OSError, ValueError, AttributeError, TypeError):
        return set()
    return {n for n in names if isinstance(n, str) and _OUTPUT_RE.fullmatch(n)}


# --------------------------------------------------------------------------------------------------------
# statistics, preview and contact sheet


class _Stats:
    """Running sums for ``layers.json``, in model units ([-1, 1]); reported on the 0-255 scale.

    Full resolution (what is written): per-layer mean/std per channel, mean absolute difference to the input,
    and how well the mean of all layers recomposes the input. Inference resolution (what the model saw):
    the Eq. 3 distance between every two layers (to choose the most dissimilar pair) and how well each pair's
    mean recomposes the model's input; at full resolution the chosen pair's error is this error upsampled,
    since the same residual detail is added to every layer. The caller passes every ``_STATS_STRIDE``-th frame.
    """

    def __init__(self, n: int):
        self.n = n
        self.pairs = list(itertools.combinations(range(n), 2))
        self.pixels = 0
        self.sum = torch.zeros(n, 3, dtype=torch.float64)
        self.sq = torch.zeros(n, 3, dtype=torch.float64)
        self.mad = torch.zeros(n, dtype=torch.float64)
        self.all_abs = 0.0
        self.all_sq = 0.0
        self.low_pixels = 0
        self.frames = 0
        self.dist = torch.zeros(n, n, dtype=torch.float64)
        self.pair_abs = torch.zeros(len(self.pairs), dtype=torch.float64)
        self.pair_sq = torch.zeros(len(self.pairs), dtype=torch.float64)

    def add_full(self, layers: Tensor, video: Tensor) -> None:
        """``layers``: clamped ``[n, 3, c, H, W]``; ``video``: the input ``[3, c, H, W]``."""
        # One layer at a time: allocating [n, 3, c, H, W] temporaries costs more than the arithmetic.
        self.pixels += video[0].numel()
        total = torch.zeros_like(video)
        for k in range(self.n):
            layer = layers[k]
            total += layer
            self.sum[k] += layer.sum(dim=(1, 2, 3)).double()
            self.sq[k] += layer.square().sum(dim=(1, 2, 3)).double()
            self.mad[k] += float((layer - video).abs_().sum()) / 3
        err = total.div_(self.n).sub_(video)
        self.all_abs += float(err.abs().sum()) / 3
        self.all_sq += float(err.square_().sum()) / 3

    def add_low(self, layers: Tensor, video: Tensor) -> None:
        """``layers``: raw model outputs ``[n, 3, c, h, w]``; ``video``: the model's input ``[3, c, h, w]``."""
        c = layers.shape[2]
        clamped = layers.clamp(-1, 1)
        for k, (i, j) in enumerate(self.pairs):
            # Eq. 3 averages over frames: weight by c to get a per-frame mean over the whole video.
            # One pair at a time: small temporaries are much faster here than one batched [pairs, ...] pass.
            self.dist[i, j] += float(reconstruction_loss(layers[i], layers[j])) * c
            err = (clamped[i] + clamped[j]).div_(2).sub_(video)
            self.pair_abs[k] += float(err.abs().sum()) / 3
            self.pair_sq[k] += float(err.square_().sum()) / 3
        self.low_pixels += video[0].numel()
        self.frames += c

    def distances(self) -> Tensor:
        d = self.dist / max(self.frames, 1)
        return d + d.T

    @staticmethod
    def quality(abs_sum: float, sq_sum: float, pixels: int, scale: float = 127.5) -> dict[str, float]:
        """L1 (0-255 units) and PSNR (peak 255) from sums of absolute/squared errors in units of 1/scale."""
        l1 = abs_sum / max(pixels, 1) * scale
        mse = sq_sum / max(pixels, 1) * scale**2
        psnr = 10 * math.log10(255.0**2 / max(mse, 255.0**2 * 1e-10))  # at most 100 dB, as losses.psnr
        return {"l1": round(l1, 4), "psnr_db": round(psnr, 3)}

    def summary(self, chosen: tuple[int, int]) -> dict[str, Any]:
        count = max(self.pixels, 1)
        mean = self.sum / count
        std = (self.sq / count - mean.square()).clamp_min(0).sqrt()
        per_layer = [{"slot": k, "mean_rgb": [round(float(127.5 * (x + 1)), 3) for x in mean[k]],
                      "std_rgb": [round(float(127.5 * x), 3) for x in std[k]],
                      "mean_abs_diff_to_input": round(float(127.5 * self.mad[k] / count), 4)}
                     for k in range(self.n)]
        k = self.pairs.index(tuple(sorted(chosen)))
        return {
            "stats_frames": {"every": _STATS_STRIDE, "count": self.frames},
            "layer_stats": per_layer,
            "recomposition": {
                "note": "input vs the mean of layers (blend model V = (V1 + V2) / 2); l1 in 0-255 units, PSNR "
                        "with peak 255 (at most 100 dB). chosen_pair: at the inference resolution, against the model's "
                        "input; all_layers: at full resolution; chosen_pair_encoded: the written files, decoded, "
                        "against the input",
                "chosen_pair": self.quality(float(self.pair_abs[k]), float(self.pair_sq[k]), self.low_pixels),
                "all_layers": self.quality(self.all_abs, self.all_sq, self.pixels),
            },
        }


def _most_dissimilar(dist: Tensor) -> tuple[int, int]:
    """Sec. 3.2 on an accumulated distance matrix: the pair ``i < j`` farthest apart."""
    n = dist.shape[0]
    upper = torch.ones(n, n, dtype=torch.bool).triu(1)
    flat = int(dist.masked_fill(~upper, float("-inf")).flatten().argmax())
    return flat // n, flat % n


def _to_uint8(x: Tensor) -> np.ndarray:
    """In place: ``[..., 3, T, H, W]`` in [-1, 1] -> ``uint8 [..., T, H, W, 3]``."""
    return x.add_(1).mul_(127.5).round_().to(torch.uint8).movedim(-4, -1).contiguous().numpy()


def _label(text: str, width: int, height: int = _LABEL_H) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (width, height), (0, 0, 0))
    ImageDraw.Draw(img).text((4, 2), text, fill=(255, 255, 255), font=ImageFont.load_default())
    return np.asarray(img)


def thumbnail(frame: np.ndarray, height: int) -> np.ndarray:
    """``uint8 [H, W, 3]`` frame resized to ``height`` rows, keeping its aspect ratio."""
    from PIL import Image

    h, w = frame.shape[:2]
    width = max(1, round(w * height / h))
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))


def write_contact_sheet(path: Path, rows: list[tuple[int, list[np.ndarray]]], names: list[str]) -> None:
    """Rows = sampled frames, columns = input | layers, with a header of column names."""
    from PIL import Image, ImageDraw, ImageFont

    cell_w = rows[0][1][0].shape[1]
    header = np.concatenate([_label(name, cell_w) for name in names], axis=1)
    body = [np.concatenate(cells, axis=1) for _, cells in rows]
    sheet = Image.fromarray(np.concatenate([header, *body], axis=0))
    draw = ImageDraw.Draw(sheet)
    for r, (index, _) in enumerate(rows):
        draw.text((4, _LABEL_H + r * _CONTACT_CELL_H + 2), f"frame {index}", fill=(255, 255, 0),
                  font=ImageFont.load_default())
    sheet.save(path, format="PNG")


def _write_preview(path: Path, fps: float, inputs: Iterator[np.ndarray], layer_files: list[Path],
                   names: list[str], width: int, height: int, batch: int) -> dict[str, float]:
    """Input and chosen layers side by side (re-read from the encoded files), each panel with a label.

    Returns how well the mean of the decoded layers recomposes the input (see :meth:`_Stats.quality`).
    """
    # Fit 640x360 per panel; small videos are enlarged (at most 4x) so that the labels fit.
    scale = min(4.0, _PREVIEW_MAX_H / height, _PREVIEW_MAX_W / width)
    pw, ph = max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2))
    header = np.concatenate([_label(name, pw) for name in names], axis=1)
    streams = [inputs] + [iter_frames(p, batch=batch) for p in layer_files]
    abs_sum = sq_sum = 0.0
    pixels = 0
    with VideoWriter(path, fps, pw * len(names), ph + _LABEL_H, crf=_CRF, preset=_X264_PRESET) as writer:
        for batches in zip(*streams, strict=False):
            c = min(len(b) for b in batches)
            x = [to_model(b[:c]) for b in batches]
            err = torch.stack(x[1:]).mean(dim=0).sub_(x[0])
            abs_sum += float(err.abs().sum()) / 3
            sq_sum += float(err.square().sum()) / 3
            pixels += x[0][0].numel()
            frames = np.concatenate([_to_uint8(_resize(v, (ph, pw)).clamp_(-1, 1)) for v in x], axis=2)
            writer.write(np.concatenate([np.broadcast_to(header, (c, *header.shape)), frames], axis=1))
    return _Stats.quality(abs_sum, sq_sum, pixels)


# --------------------------------------------------------------------------------------------------------
# the pipeline


def _as_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise CentrifugeError(f"expected frames [T, H, W, 3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise CentrifugeError(f"expected uint8 frames, got {frames.dtype}")
    if frames.shape[0] == 0:
        raise CentrifugeError("no frames to separate")
    return frames


class _Timer:
    def __init__(self) -> None:
        self.t: dict[str, float] = {"decode": 0.0, "inference": 0.0, "stitch": 0.0, "compose": 0.0, "encode": 0.0,
                                    "finish": 0.0}

    @contextlib.contextmanager
    def __call__(self, key: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.t[key] += time.perf_counter() - t0


def separate(
    path_or_frames: str | os.PathLike[str] | np.ndarray,
    model: None | str | os.PathLike[str] | nn.Module = None,
    out_dir: str | os.PathLike[str] | None = None,
    layers: str = "best2",
    size: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    window: int | None = None,
    overlap: int | None = None,
    fps: float | None = None,
    progress: bool = True,
    tile: int | bool | None = None,
    detail: bool = True,
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> SeparationResult:
    """Separate a video into layers (Sec. 5).

    Args:
        path_or_frames: a video file, or ``uint8 [T, H, W, 3]`` RGB frames.
        model: a ``.safetensors`` file or run folder, an ``nn.Module`` (a prepared copy runs; the module
            itself is not changed), or None for the packaged default model.
        out_dir: folder for ``layer_*.mp4``, ``preview.mp4``, ``contact.png``, ``layers.json``; None writes
            nothing and returns the layers in memory.
        layers: ``"best2"`` (the two most dissimilar layers) or ``"all"`` (every model output, in slot order).
        size: process at this shortest side (outputs are brought back to the input resolution). Default: twice
            the model's training size when the input's shortest side is larger than that, else the input size.
        device, precision: ``auto``/``cpu``/``cuda[:N]``; ``fp32``/``bf16``/``fp16`` (``auto``: bf16 on GPUs
            that have it, else fp32).
        window, overlap: clip length given to the model and frames shared by consecutive windows (defaults:
            the model's training clip length or 32, and ``window // 4``).
        fps: frame rate of the outputs (default: the input's average rate; 25 for a frames array).
        progress: show a progress bar (frames, frames/s, ETA) on stderr.
        tile: run on spatial tiles of this size (``True``: twice the training size) at full resolution, or at
            ``size`` if given.
        detail: add the input's high-frequency residual to every upsampled layer (see the module docstring).
        overwrite: allow a non-empty ``out_dir`` (files of the same names are replaced).
        on_progress: called as ``on_progress(frames_done, frames_expected)`` after each written chunk (the
            expected count is the header's, an estimate for some files). An exception it raises stops the run
            like any other error: nothing is left under ``out_dir``.

    Returns:
        :class:`SeparationResult`.

    Raises:
        CentrifugeError, VideoError, CheckpointError: bad input, output folder or model (messages for users).
    """
    t_start = time.perf_counter()
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise CentrifugeError(f"fps must be positive, got {fps}")
    if layers not in ("best2", "all"):
        raise CentrifugeError(f"layers must be 'best2' or 'all', got {layers!r}")
    if size is not None and size < MIN_SIZE:
        raise CentrifugeError(f"--size must be at least {MIN_SIZE} pixels, got {size}")

    # ---- input (checked before the model is loaded, so bad input fails fast)
    input_path: Path | None = None
    if isinstance(path_or_frames, np.ndarray):
        array = _as_frames(path_or_frames)
        total_est, height, width = array.shape[0], array.shape[1], array.shape[2]
        rate = float(fps or DEFAULT_FPS)
        input_meta: dict[str, Any] = {"path": None, "frames": total_est, "width": width, "height": height}
    else:
        array = None
        input_path = Path(path_or_frames)
        info = check_video(input_path)
        total_est, height, width = info.num_frames, info.height, info.width
        rate = float(fps or info.fps)
        input_meta = {"path": str(input_path), "frames_in_header": info.num_frames, "width": width,
                      "height": height, "fps": info.fps, "rotation": info.rotation, "duration_s": info.duration}

    output = _Output(out_dir, overwrite, input_path) if out_dir is not None else None
    try:
        return _run(array, input_path, total_est, height, width, rate, input_meta, model, output, layers, size,
                    device, precision, window, overlap, progress, tile, detail, t_start, on_progress)
    except BaseException:
        if output is not None:
            output.abort()
        raise


def _run(array: np.ndarray | None, input_path: Path | None, total_est: int, height: int, width: int, rate: float,
         input_meta: dict[str, Any], model_arg: Any, output: _Output | None, layers_mode: str, size: int | None,
         device_name: str, precision: str, window: int | None, overlap: int | None, progress: bool,
         tile: int | bool | None, detail: bool, t_start: float,
         on_progress: Callable[[int, int], None] | None = None) -> SeparationResult:
    timer = _Timer()
    dev = pick_device(device_name)
    _check_precision(precision)
    model, info = _load(model_arg, dev)
    train_frames, train_size = _training_geometry(info)
    n = getattr(model, "n_layers", None)
    if n is not None and n < 2:
        raise CentrifugeError(f"the model has {n} output layer; separation needs at least 2")

    window = window or train_frames or DEFAULT_WINDOW
    overlap = window // 4 if overlap is None else overlap
    if window < 1 or not 0 <= overlap < window:
        raise CentrifugeError(f"need window >= 1 and 0 <= overlap < window, got window {window}, overlap {overlap}")
    hop = window - overlap

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
    pw, ph = _scaled_size(width, height, proc_size)
    resized = (pw, ph) != (width, height)
    _check_memory(model, model_arg, dev, n or 2, window, (pw, ph), (width, height), tile_size)
    runner = _Runner(model, dev, precision, tile_size, copy=isinstance(model_arg, nn.Module))
    keep = array is not None or output is None
    # 4:2:0 chroma needs even sizes; 4:4:4 keeps an odd-sized input's exact size (but fewer players take it).
    pix_fmt = "yuv444p" if width % 2 or height % 2 else "yuv420p"

    # ---- decode as a stream of single frames
    def frame_stream() -> Iterator[np.ndarray]:
        if array is not None:
            yield from array
            return
        it = iter_frames(input_path, batch=8)
        while True:
            with timer("decode"):
                batch = next(it, None)
            if batch is None:
                return
            yield from batch

    stitcher = WindowStitcher()
    stats: _Stats | None = None
    writers: list[VideoWriter] = []
    kept: list[list[np.ndarray]] = []
    contact_at = sorted({int(round(x)) for x in np.linspace(0, max(total_est - 1, 0), _CONTACT_ROWS)})
    thumbs: dict[int, list[np.ndarray]] = {}
    emitted = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total_est, unit="frame", desc="separating", dynamic_ncols=True, leave=True)

    with contextlib.ExitStack() as stack:
        if bar is not None:
            stack.callback(bar.close)

        def emit(chunk: Tensor, frames: list[np.ndarray]) -> None:
            """Compose full-resolution layers for frames [emitted, emitted + c), encode, accumulate."""
            nonlocal emitted, stats
            c = chunk.shape[2]
            if c == 0:
                return
            nl = chunk.shape[0]
            if nl < 2:
                raise CentrifugeError(f"the model has {nl} output layer; separation needs at least 2")
            if stats is None:
                stats = _Stats(nl)
                kept.extend([] for _ in range(nl))
                if output is not None:
                    for k in range(nl):
                        writers.append(stack.enter_context(
                            VideoWriter(output.path(f"slot_{k}.mp4"), rate, width, height, crf=_CRF,
                                        preset=_X264_PRESET, pix_fmt=pix_fmt)))
            step = max(1, _COMPOSE_BUDGET // (nl * 3 * height * width))
            for a in range(0, c, step):
                b = min(c, a + step)
                video = np.stack(frames[a:b])
                with timer("compose"):
                    low = chunk[:, :, a:b]
                    v = to_model(video)
                    if resized:
                        v_low = _resize(v, (ph, pw))  # exactly what the model was given
                        full = _resize(low, (height, width))
                        if detail:
                            full += v - _resize(v_low, (height, width))
                    else:
                        v_low, full = v, low.clone()
                    full.clamp_(-1, 1)
                    sel = [t for t in range(b - a) if (emitted + a + t) % _STATS_STRIDE == 0]
                    if sel:
                        stats.add_full(full[:, :, sel], v[:, sel])
                        stats.add_low(low[:, :, sel], v_low[:, sel])
                    out = _to_uint8(full)
                with timer("encode"):
                    for k, writer in enumerate(writers):
                        writer.write(out[k])
                if keep:
                    for k in range(nl):
                        kept[k].append(out[k])
                for t in range(a, b):
                    if emitted + t in contact_at:
                        thumbs[emitted + t] = [thumbnail(video[t - a], _CONTACT_CELL_H)] + [
                            thumbnail(out[k, t - a], _CONTACT_CELL_H) for k in range(nl)]
            emitted += c
            if bar is not None:
                bar.update(c)
            if on_progress is not None:
                on_progress(emitted, max(total_est, emitted))

        def infer(clip: list[np.ndarray]) -> Tensor:
            length = len(clip)
            x = np.stack(clip)
            if length < window:  # only a video shorter than one window
                x = x[_pingpong(length, window)]
            with timer("inference"):
                xin = _resize(to_model(x), (ph, pw))
                return runner(xin)[:, :, :length]

        # ---- windows: [s, s + window) every hop frames; the last one ends on the last frame
        frames_it = frame_stream()
        buf: list[np.ndarray] = []
        buf_start = 0  # index of buf[0]
        s = 0  # start of the next window == first frame not yet emitted
        prev_end = 0  # end of the last window run
        eof = False
        while True:
            while not eof and buf_start + len(buf) < s + window:
                frame = next(frames_it, None)
                if frame is None:
                    eof = True
                else:
                    buf.append(frame)
            end = buf_start + len(buf)
            if not eof:
                y = infer(buf[s - buf_start:s - buf_start + window])
                with timer("stitch"):
                    chunk = stitcher.add(y, hop)
                emit(chunk, buf[s - buf_start:s - buf_start + hop])
                del buf[:s - buf_start]  # keep from s: the last window may reach back this far
                buf_start = s
                prev_end = s + window
                s += hop
                continue
            if end > prev_end:
                first = max(0, end - window, buf_start)
                y = infer(buf[first - buf_start:])[:, :, s - first:]
                with timer("stitch"):
                    chunk = stitcher.add(y, y.shape[2])
                emit(chunk, buf[s - buf_start:])
            else:
                tail = stitcher.flush()
                if tail is not None:
                    emit(tail, buf[s - buf_start:s - buf_start + tail.shape[2]])
            break
        total = emitted
        if bar is not None:  # the header's frame count can be an estimate
            bar.total = total
            bar.refresh()
        if total == 0 or stats is None:
            raise CentrifugeError("no frames could be decoded from the input")
        for writer in writers:
            with timer("encode"):
                writer.close()

        # ---- choose, summarise, finish
        dist = stats.distances()
        chosen = _most_dissimilar(dist)
        order = list(chosen) if layers_mode == "best2" else list(range(stats.n))
        names = [LAYER_NAME.format(i) for i in range(len(order))]
        t_proc = time.perf_counter() - t_start
        meta: dict[str, Any] = {
            "input": {**input_meta, "frames": total, "fps_out": rate},
            "model": {"path": info.get("path"), "config": info.get("config"),
                      "info": {k: v for k, v in info.items() if k not in ("path", "config")},
                      "train_frames": train_frames, "train_size": train_size},
            "settings": {"layers": layers_mode, "window": window, "overlap": overlap,
                         "inference_size": [pw, ph], "auto_size": auto_size, "tile": tile_size,
                         "detail": detail and resized, "device": str(dev), "precision": precision,
                         "compute_dtype": runner.dtype},
            "files": {"layers": names if output is not None else [],
                      "preview": PREVIEW_NAME if output is not None else None,
                      "contact": CONTACT_NAME if output is not None else None},
            "order": order,
            "chosen": list(chosen),
            "layer_distances": [[round(float(x), 5) for x in row] for row in dist],
            **stats.summary(chosen),
            "stitching": {"windows": stitcher.windows, "windows_reordered": stitcher.reordered,
                          "tiles_per_window": runner.tiles_per_window},
        }
        files: dict[str, Path] = {}
        if output is not None:
            with timer("finish"):
                col_names = ["input"] + [Path(nm).stem for nm in names]
                rows = [(i, [cells[0]] + [cells[1 + k] for k in order]) for i, cells in sorted(thumbs.items())]
                if rows:
                    write_contact_sheet(output.path(CONTACT_NAME), rows, col_names)
                batch = max(1, _COMPOSE_BUDGET // (3 * 3 * height * width))
                inputs = (iter([array[i:i + batch] for i in range(0, len(array), batch)]) if array is not None
                          else iter_frames(input_path, batch=batch))
                meta["recomposition"]["chosen_pair_encoded"] = _write_preview(
                    output.path(PREVIEW_NAME), rate, inputs,
                    [output.path(f"slot_{k}.mp4") for k in chosen],
                    ["input"] + [f"{Path(names[order.index(k)]).stem} (slot {k})" for k in chosen], width, height,
                    batch)
        total_s = time.perf_counter() - t_start
        meta["timings"] = {**{f"{k}_s": round(v, 3) for k, v in timer.t.items()},
                           "processing_s": round(t_proc, 3), "total_s": round(total_s, 3),
                           "frames_per_s": round(total / total_s, 3) if total_s > 0 else None}
        if output is not None:
            output.write_json(META_NAME, meta)
            moves = {f"slot_{k}.mp4": name for k, name in zip(order, names, strict=True)}
            moves.update({PREVIEW_NAME: PREVIEW_NAME, META_NAME: META_NAME})
            if (output.tmp / CONTACT_NAME).exists():
                moves[CONTACT_NAME] = CONTACT_NAME
            files = output.commit(moves)

    result_layers = None
    if keep:
        result_layers = np.stack([np.concatenate(kept[k]) for k in order])
    return SeparationResult(layers=result_layers, order=order, chosen=chosen, metadata=meta, files=files)
