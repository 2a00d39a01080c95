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

from .errors import CentrifugeError
from .separate import SeparationResult, separate
from .video import VideoInfo
from .video import check_video as check_is_video

#: Finished jobs older than this are removed when a new job starts (an hour: long enough to look and download).
JOB_MAX_AGE_S = 3600.0

Progress = Callable[[int, int], None]


class Stopped(Exception):
    """The server is stopping; the job was abandoned and its folder removed."""


@dataclass(frozen=True)
class Limits:
    """What the server accepts: file size (MB, 2**20 bytes) and video duration (seconds)."""

    max_upload_mb: float = 500.0
    max_seconds: float = 600.0


def check_video(path: str | Path, limits: Limits) -> VideoInfo:
    """Refuse, before any work, a file that is too large, is not a video, or is too long (one-line errors)."""
    path = Path(path)
    size_mb = path.stat().st_size / 2**20
    if size_mb > limits.max_upload_mb:
        raise CentrifugeError(f"{path.name} is {size_mb:.1f} MB; this server takes files up to "
                              f"{limits.max_upload_mb:g} MB (--max-upload-mb)")
    info = check_is_video(path)  # what a video is: decided in centrifuge.video for every command
    seconds = info.duration or (info.num_frames / info.fps if info.fps else 0.0)
    if seconds > limits.max_seconds:
        raise CentrifugeError(f"{path.name} lasts {seconds:.1f} s; this server takes videos up to "
                              f"{limits.max_seconds:g} s (--max-seconds)")
    return info


class Jobs:
    """Per-job temporary folders under ``root`` (see the module docstring)."""

    def __init__(self, root: str | Path, max_age_s: float = JOB_MAX_AGE_S):
        self.dir = Path(root)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_age_s = max_age_s
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._running: set[Path] = set()

    @contextlib.contextmanager
    def job(self) -> Iterator[Path]:
        """A new empty folder for one job; removed if the job raises."""
        self.check()
        self.sweep()
        path = Path(tempfile.mkdtemp(prefix="job-", dir=self.dir))
        with self._lock:
            self._running.add(path)
        try:
            yield path
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        finally:
            with self._lock:
                self._running.discard(path)

    def check(self) -> None:
        """Raise :class:`Stopped` once :meth:`stop` was called."""
        if self.stopping.is_set():
            raise Stopped("the server is stopping")

    def progress(self, report: Progress | None) -> Progress:
        """A progress callback for :func:`centrifuge.separate` that also stops the job when the server stops."""

        def callback(done: int, total: int) -> None:
            self.check()
            if report is not None:
                report(done, total)

        return callback

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


@dataclass
class SeparationJob:
    """A finished :func:`separate_job`: its folder, the separation and the zip of all its outputs."""

    folder: Path
    result: SeparationResult
    zip: Path


def separate_job(jobs: Jobs, video: str | Path, limits: Limits, model: str | None = None, device: str = "auto",
                 layers: str = "best2", size: int | str | None = None, on_progress: Progress | None = None
                 ) -> SeparationJob:
    """Check ``video`` against ``limits``, then separate it into a new job folder, as ``centrifuge separate``.

    ``size``: as :func:`centrifuge.separate`, or ``"auto"`` (same as None: twice the model's training size for
    larger videos) or ``"input"`` (the input's own size).
    """
    info = check_video(video, limits)
    if size == "auto":
        size = None
    elif size == "input":
        size = min(info.width, info.height)
    if on_progress is not None:
        on_progress(0, info.num_frames)  # the bar shows up before the model has seen a window
    with jobs.job() as folder:
        result = separate(video, model=model, out_dir=folder / "layers", layers=layers, size=size, device=device,
                          precision="auto", progress=False, on_progress=jobs.progress(on_progress))
        archive = folder / f"{Path(video).stem}-layers.zip"
        # Stored, not deflated: the videos are already compressed.
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
            for name, path in sorted(result.files.items()):
                zf.write(path, name)
    return SeparationJob(folder, result, archive)


def blend_job(jobs: Jobs, videos: list[str | Path], limits: Limits, model: str | None = None,
              device: str = "auto", on_progress: Progress | None = None
              ) -> tuple[Path, dict[str, Any], dict[str, Path], dict[str, Any]]:
    """Blend two clips and separate the blend into a new job folder, as ``centrifuge demo`` does.

    Returns the folder, the identity-vs-model figures, the files written and the model's info.
    """
    from .checkpoint import load_model
    from .demo import blend_and_separate
    from .devices import pick_device

    if len(videos) != 2:
        raise CentrifugeError("a blend needs two clips")
    for video in videos:
        check_video(video, limits)
    net, info = load_model(model, pick_device(device))
    with jobs.job() as folder:
        jobs.check()
        figures, files = blend_and_separate(videos, net, folder / "blend", progress=False, device=device,
                                            on_progress=jobs.progress(on_progress))
    return folder, figures, files, info
