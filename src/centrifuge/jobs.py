"""The work behind the web page (``centrifuge app``), without the page: input checks, per-job folders, and the
two jobs it runs, both on the product's own code path.

* :func:`separate_job` runs :func:`centrifuge.separate` (the streaming function behind ``centrifuge separate``)
  and zips its outputs.
* :func:`blend_job` runs :func:`centrifuge.demo.blend_and_separate` (the blend step of ``centrifuge demo``).

Files
    Every job writes only into its own folder, made by :meth:`Jobs.job` under one root; a job that fails
    removes its folder. Finished jobs are removed when the same page starts a new one (:meth:`Jobs.remove`),
    when they are older than ``max_age_s`` (:meth:`Jobs.sweep`, run at each job start), and with the root when
    the server stops. Input files are only read.

Stopping
    :meth:`Jobs.stop` sets a flag that each running job's progress callback turns into :class:`Stopped`, so a
    separation ends at its next chunk of frames and :func:`centrifuge.separate` removes its partial output.
    :meth:`Jobs.cancel` does the same for the one job started under a key (a browser tab), raising
    :class:`Cancelled`; the job's folder is removed either way.

Estimates
    :meth:`Jobs.estimate` predicts a separation's run time from the last one measured on this server (seconds
    per processed pixel and frame, see :meth:`Jobs.measured`): an order of magnitude for the page, not a promise.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import SeparationResult, separate
from .errors import CentrifugeError
from .video import VideoInfo, iter_frames
from .video import check_video as check_is_video
from .video_writer import VideoWriter

#: Finished jobs older than this are removed when a new job starts (an hour: long enough to look and download).
JOB_MAX_AGE_S = 3600.0

Progress = Callable[[int, int], None]


class Stopped(Exception):
    """The server is stopping; the job was abandoned and its folder removed."""


class Cancelled(Stopped):
    """The job was cancelled by whoever started it; its folder was removed."""


@dataclass(frozen=True)
class Limits:
    """What the server accepts: file size (MB, 2**20 bytes) and video duration (seconds)."""

    max_upload_mb: float = 500.0
    max_seconds: float = 600.0


def seconds(info: VideoInfo) -> float:
    """A video's duration in seconds (from its frame count where the container has no duration)."""
    return info.duration or (info.num_frames / info.fps if info.fps else 0.0)


def check_video(path: str | Path, limits: Limits, length_s: float | None = None) -> VideoInfo:
    """Refuse, before any work, a file that is too large or is not a video, or a part of it (``length_s``
    seconds, default all of it) that is too long. The messages are one line, for the person on the page: the
    limits are the server's settings, so they name no command-line flag."""
    path = Path(path)
    size_mb = path.stat().st_size / 2**20
    if size_mb > limits.max_upload_mb:
        raise CentrifugeError(f"{path.name} is {size_mb:.1f} MB; this server takes files up to "
                              f"{limits.max_upload_mb:g} MB")
    info = check_is_video(path)  # what a video is: decided in centrifuge.video for every command
    length = seconds(info) if length_s is None else min(length_s, seconds(info))
    if length > limits.max_seconds + 1e-6:
        raise CentrifugeError(f"{path.name}: {length:.1f} s asked; this server separates at most "
                              f"{limits.max_seconds:g} s at a time (choose a shorter length)")
    return info


class Jobs:
    """Per-job temporary folders under ``root`` (see the module docstring)."""

    def __init__(self, root: str | Path, max_age_s: float = JOB_MAX_AGE_S):
        self.dir = Path(root)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_age_s = max_age_s
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._running: dict[Path, threading.Event] = {}  # folder -> its cancel flag
        self._keys: dict[str, threading.Event] = {}
        self._ends: dict[Path, float] = {}  # folder -> expected end (time.monotonic), where estimated
        self._speed: dict[str, tuple[float, str]] = {}  # model -> (seconds per processed pixel and frame, how)

    @contextlib.contextmanager
    def job(self, key: str | None = None) -> Iterator[Path]:
        """A new empty folder for one job, cancelled by :meth:`cancel` with the same ``key``; removed if the
        job raises."""
        self.check()
        self.sweep()
        path = Path(tempfile.mkdtemp(prefix="job-", dir=self.dir))
        flag = threading.Event()
        with self._lock:
            self._running[path] = flag
            if key is not None:
                self._keys[key] = flag
        try:
            yield path
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        finally:
            with self._lock:
                self._running.pop(path, None)
                self._ends.pop(path, None)
                if key is not None and self._keys.get(key) is flag:
                    del self._keys[key]

    def expect(self, folder: Path, seconds: float | None) -> None:
        """Record how long the job in ``folder`` is expected to take from now (for :meth:`first_free`)."""
        if seconds is not None:
            with self._lock:
                if folder in self._running:
                    self._ends[folder] = time.monotonic() + seconds

    def first_free(self) -> float | None:
        """Seconds until the first running job is expected to end (0 when overdue); None when none is estimated."""
        with self._lock:
            ends = list(self._ends.values())
        return max(0.0, min(ends) - time.monotonic()) if ends else None

    @property
    def running(self) -> int:
        """How many jobs are running now."""
        with self._lock:
            return len(self._running)

    def check(self, flag: threading.Event | None = None) -> None:
        """Raise :class:`Stopped` once :meth:`stop` was called, :class:`Cancelled` once ``flag`` is set."""
        if self.stopping.is_set():
            raise Stopped("the server is stopping")
        if flag is not None and flag.is_set():
            raise Cancelled("cancelled")

    def cancel(self, key: str) -> bool:
        """Cancel the running job started under ``key`` (it stops at its next chunk of frames and its folder is
        removed); False when there is none."""
        with self._lock:
            flag = self._keys.get(key)
        if flag is None:
            return False
        flag.set()
        return True

    def progress(self, report: Progress | None, folder: Path | None = None) -> Progress:
        """A progress callback for :func:`centrifuge.separate` that also stops the job (the one in ``folder``)
        when the server stops or the job is cancelled."""
        with self._lock:
            flag = self._running.get(folder) if folder is not None else None

        def callback(done: int, total: int) -> None:
            self.check(flag)
            if report is not None:
                report(done, total)

        return callback

    def measured(self, model: str, result: SeparationResult, how: str = "the last run on this server") -> None:
        """Remember how fast ``model`` separated on this server (for :meth:`estimate`); ``how`` says which run."""
        pw, ph = result.metadata["settings"]["inference_size"]
        frames = result.metadata["input"]["frames"]
        if frames > 0:
            with self._lock:
                self._speed[model] = (result.metadata["timings"]["total_s"] / (frames * pw * ph), how)

    def estimate(self, model: str, frames: int, width: int, height: int) -> tuple[float, str] | None:
        """Predicted seconds to separate ``frames`` frames processed at ``width`` x ``height``, and the run it
        comes from; None before ``model`` was measured here."""
        with self._lock:
            speed = self._speed.get(model)
        return None if speed is None else (speed[0] * frames * width * height, speed[1])

    def calibrate(self, model: str | None, device: str = "auto") -> None:
        """Measure ``model`` on a small generated clip (16 frames of 112x112, nothing written), so that the page
        has an estimate before its first job. It leaves out the writing of the outputs: a low estimate. Raises
        :class:`Stopped` when the server stops meanwhile."""
        clip = np.random.default_rng(0).integers(0, 256, (16, 112, 112, 3), dtype=np.uint8)
        result = separate(clip, model=model, device=device, progress=False, on_progress=self.progress(None))
        with self._lock:
            if (model or "default") in self._speed:
                return  # a real job was faster to finish: it is the better figure
        self.measured(model or "default", result, "a short test run when the server started, without writing files")

    def remove(self, path: str | Path | None) -> None:
        """Remove a finished job's folder (only a direct child of the root, never a running job)."""
        if not path:
            return
        path = Path(path)
        with self._lock:
            if path.parent != self.dir or path in self._running:
                return
        shutil.rmtree(path, ignore_errors=True)

    def sweep(self) -> None:
        """Remove finished jobs older than ``max_age_s``."""
        now = time.time()
        for path in list(self.dir.iterdir()):
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > self.max_age_s:
                    self.remove(path)

    def stop(self, wait_s: float = 30.0) -> None:
        """Ask running jobs to stop and wait (at most ``wait_s``) until they have cleaned up."""
        self.stopping.set()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._running:
                    return
            time.sleep(0.05)


def processing_size(info: VideoInfo, size: int | str | None) -> int | None:
    """The shortest side :func:`centrifuge.separate` is asked for: ``"auto"``/None (its default), ``"input"``
    (the input's own size) or pixels, never more than the input's shortest side (no upscaling: slower, and no
    detail to gain)."""
    if size in (None, "auto"):
        return None
    shortest = min(info.width, info.height)
    return shortest if size == "input" else min(int(size), shortest)


def cut(video: str | Path, out: Path, info: VideoInfo, start: int, frames: int, flag: Progress) -> Path:
    """Frames ``[start, start + frames)`` of ``video`` as a new, nearly lossless H.264 file ``out``
    (``flag(0, frames)`` is called between batches, so a cancelled or stopped job stops here too)."""
    seen = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(out, info.fps, info.width, info.height, crf=10, preset="veryfast") as writer:
        for batch in iter_frames(video, batch=8):
            flag(0, frames)
            keep = batch[max(0, start - seen):max(0, start + frames - seen)]
            seen += len(batch)
            if len(keep):
                writer.write(keep)
            if seen >= start + frames:
                break
        if writer.frames_written == 0:
            raise CentrifugeError(f"{Path(video).name} has no frames after {start / info.fps:.1f} s")
    return out


@dataclass
class SeparationJob:
    """A finished :func:`separate_job`: its folder, the separation and the zip of all its outputs."""

    folder: Path
    result: SeparationResult
    zip: Path


def separate_job(jobs: Jobs, video: str | Path, limits: Limits, model: str | None = None, device: str = "auto",
                 layers: str = "best2", size: int | str | None = None, on_progress: Progress | None = None,
                 start_s: float = 0.0, length_s: float | None = None, key: str | None = None) -> SeparationJob:
    """Check ``video`` against ``limits``, then separate it (or ``length_s`` seconds of it from ``start_s``)
    into a new job folder, as ``centrifuge separate``; ``key`` names the job for :meth:`Jobs.cancel`.

    ``size``: see :func:`processing_size`.
    """
    info = check_video(video, limits, None if length_s is None else length_s)
    first = max(0, round(start_s * info.fps)) if info.fps else 0
    count = info.num_frames - first if length_s is None else max(1, round(length_s * info.fps))
    count = max(0, min(count, info.num_frames - first))
    if count == 0:
        raise CentrifugeError(f"{Path(video).name} lasts {seconds(info):.1f} s: nothing after {start_s:g} s")
    if on_progress is not None:
        on_progress(0, count)  # the bar shows up before the model has seen a window
    with jobs.job(key) as folder:
        flag = jobs.progress(on_progress, folder)
        size_px = processing_size(info, size) or min(info.width, info.height)
        scale = size_px / min(info.width, info.height)
        guess = jobs.estimate(model or "default", count, round(info.width * scale), round(info.height * scale))
        jobs.expect(folder, guess[0] if guess else None)  # the automatic size is counted as the input's: a bound
        source = Path(video)
        if first > 0 or count < info.num_frames:
            source = cut(video, folder / "part" / f"{source.stem}.mp4", info, first, count, flag)
        result = separate(source, model=model, out_dir=folder / "layers", layers=layers,
                          size=processing_size(info, size), device=device, precision="auto", progress=False,
                          on_progress=flag)
        archive = folder / f"{Path(video).stem}-layers.zip"
        # Stored, not deflated: the videos are already compressed.
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
            for name, path in sorted(result.files.items()):
                zf.write(path, name)
    jobs.measured(model or "default", result)
    return SeparationJob(folder, result, archive)


def blend_job(jobs: Jobs, videos: list[str | Path], limits: Limits, model: str | None = None,
              device: str = "auto", on_progress: Progress | None = None, key: str | None = None
              ) -> tuple[Path, dict[str, Any], dict[str, Path], dict[str, Any]]:
    """Blend two clips and separate the blend into a new job folder, as ``centrifuge demo`` does (``key``: as
    :func:`separate_job`).

    Returns the folder, the identity-vs-model figures, the files written and the model's info.
    """
    from .checkpoint import load_model
    from .demo import FRAMES, blend_and_separate
    from .devices import pick_device

    if len(videos) != 2:
        raise CentrifugeError("a blend needs two clips")
    for video in videos:
        check_video(video, limits, length_s=0.0)  # the blend reads only its first frames
    if on_progress is not None:
        on_progress(0, FRAMES)
    net, info = load_model(model, pick_device(device))
    with jobs.job(key) as folder:
        flag = jobs.progress(on_progress, folder)
        flag(0, FRAMES)
        figures, files = blend_and_separate(videos, net, folder / "blend", progress=False, device=device,
                                            on_progress=flag)
    return folder, figures, files, info
