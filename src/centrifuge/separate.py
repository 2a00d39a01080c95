"""Sec. 5: separate a real video into layers, window by window, in memory that does not grow with its length.

:func:`separate` is the front door; the stages are files of :mod:`centrifuge.separation`, and a frame takes
them in this order (one pass over the video, and a second over the input for the deferred composition below):

1. **Decode** (``source``): frames as they come; only the current window and its overlap stay in memory.
2. **Window** (``windows``): clips of ``window`` frames (default: the model's training clip length when the
   checkpoint records it, else 32) every ``window - overlap`` frames (default overlap ``window // 4``).
3. **Run** (``runner``): the prepared model on the clip, at the inference size or on tiles.
4. **Stitch** (``stitch``): the window's layers permuted to match the previous window's, the overlap
   cross-faded; the frames no later window reaches are final.
5. **Compose** (``compose``): those frames' layers brought back to the input resolution, with the input as
   the runner resized it (not resized again).
6. **Sinks** (``sinks``): statistics (``stats``), one H.264 file per model slot (``output``), the contact
   sheet's thumbnails (``previews``) and, for a result kept in memory, the layers themselves. With files and
   ``layers="best2"`` (the default) the composition is deferred: every slot is kept at the inference size
   (``store``), only the frames the statistics read are composed. After the last window the sinks choose the
   two most dissimilar slots over the whole video (Sec. 3.2); when deferred, those two are composed and
   encoded in a second pass over the input, which
   also makes ``preview.mp4`` (``previews``: the input and the chosen layers side by side, from the frames
   handed to the layer files' encoder).
7. **Finish**: for the pair the sinks chose, ``contact.png`` is made, the
   layer files are decoded against the input once more for ``chosen_pair_encoded`` (and, on the direct way,
   where the pair is known only now, ``preview.mp4`` is made from that reading), and ``layers.json``
   (``stats``) records everything.
8. **Publish** (``output``): all files at once, ``layers.json`` last.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import CentrifugeError
from .separation.compose import COMPOSE_BUDGET
from .separation.output import CONTACT_NAME, LAYER_NAME, PREVIEW_NAME, Output, file_names
from .separation.previews import encoded_recomposition, panel_labels, write_preview
from .separation.runner import MIN_SIZE, ModelRunner, load_runner
from .separation.sinks import Sinks
from .separation.source import Source, open_source
from .separation.stats import metadata
from .separation.stitch import WindowStitcher
from .separation.windows import Window, windows

__all__ = ["SeparationResult", "SeparationPlan", "separate"]


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


@dataclass(frozen=True)
class SeparationPlan:
    """A run as :func:`separate` was asked for it, its input checked (see there for the fields)."""

    source: Source
    layers: str = "best2"
    size: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    window: int | None = None
    overlap: int | None = None
    tile: int | bool | None = None
    detail: bool = True
    progress: bool = True
    on_progress: Callable[[int, int], None] | None = None
    backend: str | None = None


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
    backend: str | None = None,
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
        progress: show a progress bar (frames, frames/s, ETA) on stderr, and a second one for the second pass.
        tile: run on spatial tiles of this size (``True``: twice the training size) at full resolution, or at
            ``size`` if given.
        detail: add the input's high-frequency residual to every upsampled layer (``separation/compose.py``).
        overwrite: allow a non-empty ``out_dir`` (files of the same names are replaced).
        on_progress: called as ``on_progress(done, expected)`` after each chunk of frames, in both passes of a
            deferred run (step 6 above: files with ``layers="best2"``). One count covers the whole run: a
            deferred run counts each frame twice, ``expected`` being twice the frame count, the first pass
            (the model) counting up to half of it and the second (composing and encoding the chosen pair and the
            preview) the rest; otherwise ``done`` counts frames of ``expected``. ``expected`` starts from the
            header's frame count, an estimate for some files, and is corrected once the first pass has read them
            all: ``done`` and ``done / expected`` never decrease, and the last call has ``done == expected``.
            The finish (step 7) is not counted, but repeats the last call before each batch of the input it
            reads again. An exception it raises stops the run like any other error, in either pass or the
            finish: nothing is left under ``out_dir``.
        backend: ``pytorch`` or ``onnxruntime`` (a file written by ``centrifuge export``, on the CPU in fp32);
            None: ``onnxruntime`` for an ``.onnx`` model, else ``pytorch`` (:mod:`centrifuge.backends`).

    Returns:
        :class:`SeparationResult`.

    Raises:
        CentrifugeError, VideoError, CheckpointError: bad input, output folder or model (messages for users).
    """
    t_start = time.perf_counter()
    _check_arguments(fps, layers, size)
    source = open_source(path_or_frames, fps)  # before the model is loaded, so that bad input fails fast
    plan = SeparationPlan(source, layers, size, device, precision, window, overlap, tile, detail, progress,
                          on_progress, backend)
    output = Output(out_dir, overwrite, source.path) if out_dir is not None else None
    try:
        return _run(plan, model, output, t_start)
    except BaseException:
        if output is not None:
            output.abort()
        raise


def _check_arguments(fps: float | None, layers: str, size: int | None) -> None:
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise CentrifugeError(f"fps must be positive, got {fps}")
    if layers not in ("best2", "all"):
        raise CentrifugeError(f"layers must be 'best2' or 'all', got {layers!r}")
    if size is not None and size < MIN_SIZE:
        raise CentrifugeError(f"--size must be at least {MIN_SIZE} pixels, got {size}")


class _Timer:
    """Seconds spent in each stage, for ``layers.json``'s ``timings``."""

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


class _Progress:
    """The progress bar and the caller's ``on_progress``, after each chunk of final frames and, when the
    composition is deferred (``sinks.py``), after each chunk of its second pass: a second bar on the terminal
    ("writing layers"), the second half of one count for ``on_progress`` (see :func:`separate`)."""

    def __init__(self, plan: SeparationPlan, stack: contextlib.ExitStack):
        self.expected, self.callback, self.stack = plan.source.frames_expected, plan.on_progress, stack
        self.show, self.passes, self.total = plan.progress, 1, 0
        self.bar = self._bar("separating", self.expected)

    def _bar(self, desc: str, total: int) -> Any:
        if not self.show:
            return None
        from tqdm import tqdm

        bar = tqdm(total=total, unit="frame", desc=desc, dynamic_ncols=True, leave=True)
        self.stack.callback(bar.close)
        return bar

    def update(self, added: int, done: int, passes: int) -> None:
        """After a chunk of the first pass (``passes``: 2 when a second pass follows it)."""
        self.passes = passes
        if self.bar is not None:
            self.bar.update(added)
        if self.callback is not None:  # the first pass counts at most half of a deferred run
            self.callback(done, passes * max(self.expected, done))

    def finish(self, total: int) -> None:
        """After the first pass, of ``total`` frames (the header's count can be an estimate)."""
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()
            if self.passes == 2:
                self.bar.close()
                self.bar = self._bar("writing layers", total)
        if self.passes == 1 and self.callback is not None and 0 < total < self.expected:
            self.callback(total, total)  # the estimate was high: the count still ends at its total

    def checked(self, batches: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """``batches`` (the finish's reading of the input), the last call repeated before each: no count for the
        finish, but a callback that raises stops it too."""
        end = self.passes * self.total
        for batch in batches:
            if self.callback is not None:
                self.callback(end, end)
            yield batch

    def written(self, added: int, done: int) -> None:
        """After a chunk of the second pass: ``done`` of the ``total`` frames composed and encoded."""
        if self.bar is not None:
            self.bar.update(added)
        if self.callback is not None:
            self.callback(self.total + done, 2 * self.total)


class _Inputs:
    """The model's input (the runner's resize of each clip) for the frames the stitcher returns: a window's
    first frames from its own clip, the final tail from the last clip run."""

    def __init__(self) -> None:
        self.tail: Tensor | None = None

    def take(self, win: Window, runner: ModelRunner, count: int) -> Tensor:
        if win.clip is None:
            assert self.tail is not None
            x, self.tail = self.tail, None
        else:
            assert runner.last_input is not None
            x = runner.last_input[:, win.skip:]
            self.tail = x[:, count:]
        return x[:, :count]


def _stitched(win: Window, runner: ModelRunner, stitcher: WindowStitcher, timer: _Timer) -> Tensor | None:
    """Run and stitch one window: its final frames' layers (None: nothing left)."""
    if win.clip is None:
        return stitcher.flush()
    with timer("inference"):
        y = runner(win.clip)[:, :, win.skip:]
    with timer("stitch"), torch.inference_mode():  # the stitcher blends the runner's (inference) outputs in place
        return stitcher.add(y, y.shape[2] if win.emit is None else win.emit)


def _run(plan: SeparationPlan, model: Any, output: Output | None, t_start: float) -> SeparationResult:
    src, timer = plan.source, _Timer()
    runner = load_runner(model, plan.device, plan.precision, (src.width, src.height), plan.window, plan.overlap,
                         plan.size, plan.tile, plan.backend)
    stitcher, inputs = WindowStitcher(), _Inputs()
    with contextlib.ExitStack() as stack:
        progress = _Progress(plan, stack)
        sinks = Sinks(src, plan.layers, plan.detail, runner.geometry, output, timer, stack, progress.written)
        for win in windows(src.frames(lambda: timer("decode")), runner.geometry.window, runner.geometry.hop):
            chunk = _stitched(win, runner, stitcher, timer)
            if chunk is not None and (added := sinks.add(chunk, inputs.take(win, runner, chunk.shape[2]),
                                                         win.frames)):
                progress.update(added, sinks.done, 2 if sinks.deferred else 1)
        progress.finish(sinks.done)
        if sinks.done == 0 or sinks.stats is None:
            raise CentrifugeError("no frames could be decoded from the input")
        sinks.close()
        result = _finish(plan, runner, stitcher, sinks, output, timer, t_start, progress)
        if output is not None:
            result.files = output.publish(result.metadata, dict(zip(result.order, _names(result.order), strict=True)))
    if sinks.kept is not None:
        result.layers = sinks.kept.layers(result.order)
    return result


def _names(order: list[int]) -> list[str]:
    """The file names of the layers written, in ``order``."""
    return [LAYER_NAME.format(i) for i in range(len(order))]


def _run_record(plan: SeparationPlan, runner: ModelRunner, names: list[str], writing: bool,
                total: int) -> dict[str, Any]:
    """``layers.json``'s input, model, settings and files."""
    info, g = runner.info, runner.geometry
    return {
        "input": {**plan.source.meta, "frames": total, "fps_out": plan.source.rate},
        "model": {"path": info.get("path"), "config": info.get("config"),
                  "info": {k: v for k, v in info.items() if k not in ("path", "config")},
                  "train_frames": runner.trained[0], "train_size": runner.trained[1]},
        "settings": {"layers": plan.layers, "window": g.window, "overlap": g.overlap,
                     "inference_size": list(g.size), "auto_size": g.auto_size, "tile": g.tile,
                     "detail": plan.detail and g.resized, "device": str(runner.device), "precision": plan.precision,
                     "compute_dtype": runner.dtype, "backend": runner.backend},
        "files": file_names(names, writing),
    }


def _finish(plan: SeparationPlan, runner: ModelRunner, stitcher: WindowStitcher, sinks: Sinks,
            output: Output | None, timer: _Timer, t_start: float, progress: _Progress) -> SeparationResult:
    """Make the contact sheet (and the preview, when the second pass did not) for the pair the sinks chose, and
    record it all (``layers.json``)."""
    assert sinks.stats is not None and sinks.chosen is not None
    src, total, chosen = plan.source, sinks.done, sinks.chosen
    order = list(chosen) if plan.layers == "best2" else list(range(sinks.stats.n))
    names = _names(order)
    t_proc = time.perf_counter() - t_start
    stitching = {"windows": stitcher.windows, "windows_reordered": stitcher.reordered,
                 "tiles_per_window": runner.tiles_per_window}
    meta = metadata(_run_record(plan, runner, names, output is not None, total), sinks.stats, chosen, order,
                    stitching)
    if output is not None:
        assert sinks.contact is not None
        with timer("finish"):
            sinks.contact.write(output.path(CONTACT_NAME), order, names)
            batch = max(1, COMPOSE_BUDGET // (3 * 3 * src.height * src.width))
            files = [output.slot_path(k) for k in chosen]
            rec, inputs = meta["recomposition"], progress.checked(src.batches(batch))
            if sinks.preview is not None:  # made by the second pass: only the figure is left
                rec["chosen_pair_encoded"] = encoded_recomposition(inputs, files, batch)
            else:
                rec["chosen_pair_encoded"] = write_preview(
                    output.path(PREVIEW_NAME), src.rate, inputs, files, panel_labels(chosen, order),
                    src.width, src.height, batch)
    total_s = time.perf_counter() - t_start
    meta["timings"] = {**{f"{k}_s": round(v, 3) for k, v in timer.t.items()},
                       "processing_s": round(t_proc, 3), "total_s": round(total_s, 3),
                       "frames_per_s": round(total / total_s, 3) if total_s > 0 else None}
    return SeparationResult(layers=None, order=order, chosen=chosen, metadata=meta)
