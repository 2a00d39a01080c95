"""Writing video with PyAV (FFmpeg): H.264 files written under a hidden temporary name and renamed into place
when complete.

Frames are ``numpy.uint8`` arrays ``[T, H, W, 3]`` in RGB, as :mod:`centrifuge.video` reads them. Failures are
raised as :class:`~centrifuge.errors.VideoError` with a message meant for users.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import av.error
import numpy as np

from .errors import VideoError

__all__ = ["VideoWriter", "write_video"]

_AV_ERRORS: tuple[type[BaseException], ...] = (av.error.FFmpegError, OSError)


def _rate(fps: float | Fraction) -> Fraction:
    if isinstance(fps, Fraction):
        rate = fps
    else:
        if not math.isfinite(fps):
            raise ValueError(f"fps must be finite, got {fps}")
        # Denominator 1001 recovers NTSC rates (30000/1001) from their float form exactly.
        rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


class VideoWriter:
    """Atomic H.264 writer, used as a context manager.

    Frames go to a hidden temporary file next to ``path`` which replaces ``path`` only on a clean
    :meth:`close`; if the ``with`` block raises, the temporary file is deleted and ``path`` is untouched.

    With the default ``pix_fmt="yuv420p"`` (playable everywhere) H.264 needs even dimensions, so an odd
    width/height is padded by repeating the last column/row: the file is then ``encoded_width x
    encoded_height``, one pixel larger. Use ``pix_fmt="yuv444p"`` to keep odd sizes exactly.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float | Fraction,
        width: int,
        height: int,
        crf: int = 18,
        preset: str = "medium",
        pix_fmt: str = "yuv420p",
    ):
        if width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive, got {width}x{height}")
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.rate = _rate(fps)
        subsampled = pix_fmt.startswith(("yuv420", "yuvj420", "nv12"))
        self.encoded_width = self.width + (self.width % 2 if subsampled else 0)
        self.encoded_height = self.height + (self.height % 2 if subsampled else 0)
        self.frames_written = 0
        self._closed = False

        suffix = self.path.suffix or ".mp4"
        self._tmp = self.path.with_name(f".{self.path.stem}.part{suffix}")
        container_format = None if self.path.suffix else "mp4"
        options = {"movflags": "+faststart"} if suffix.lower() in (".mp4", ".mov", ".m4v") else {}
        try:
            self._container = av.open(str(self._tmp), mode="w", format=container_format, options=options)
        except _AV_ERRORS as e:
            raise VideoError(f"cannot create {self.path}: {e}") from e
        try:
            self._stream = self._container.add_stream(
                "libx264", rate=self.rate, options={"crf": str(crf), "preset": preset}
            )
            self._stream.width = self.encoded_width
            self._stream.height = self.encoded_height
            self._stream.pix_fmt = pix_fmt
            self._stream.codec_context.time_base = 1 / self.rate
        except Exception as e:
            self._abort()
            if isinstance(e, _AV_ERRORS):
                raise VideoError(f"cannot set up the H.264 encoder for {self.path}: {e}") from e
            raise

    def write(self, frames: np.ndarray) -> None:
        """Append ``uint8`` frames ``[T, H, W, 3]`` or a single frame ``[H, W, 3]`` (RGB)."""
        if self._closed:
            raise VideoError(f"writer for {self.path} is closed")
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected frames [T, H, W, 3] or [H, W, 3], got shape {frames.shape}")
        if frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames, got {frames.dtype}")
        if frames.shape[1:3] != (self.height, self.width):
            raise ValueError(
                f"expected frames of {self.width}x{self.height}, got {frames.shape[2]}x{frames.shape[1]}"
            )
        pad_h, pad_w = self.encoded_height - self.height, self.encoded_width - self.width
        if pad_h or pad_w:
            frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        try:
            for rgb in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame.pts = self.frames_written
                frame.time_base = 1 / self.rate
                self._container.mux(self._stream.encode(frame))
                self.frames_written += 1
        except _AV_ERRORS as e:
            raise VideoError(f"cannot encode {self.path}: {e}") from e

    def close(self) -> None:
        """Flush the encoder and move the finished file into place."""
        if self._closed:
            return
        if self.frames_written == 0:
            self._abort()
            raise VideoError(f"no frames were written to {self.path}")
        try:
            self._container.mux(self._stream.encode(None))
            self._container.close()
        except _AV_ERRORS as e:
            self._abort()
            raise VideoError(f"cannot finish {self.path}: {e}") from e
        self._closed = True
        os.replace(self._tmp, self.path)

    def _abort(self) -> None:
        """Drop the temporary file; the final path is never touched."""
        self._closed = True
        try:
            self._container.close()
        except Exception:  # already failing; the container may be half set up
            pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()


def write_video(
    path: str | os.PathLike[str], frames: np.ndarray, fps: float | Fraction, crf: int = 18
) -> None:
    """Write ``uint8 [T, H, W, 3]`` RGB frames to an H.264 file (atomically, see :class:`VideoWriter`)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [T, H, W, 3], got shape {frames.shape}")
    with VideoWriter(path, fps, frames.shape[2], frames.shape[1], crf=crf) as writer:
        writer.write(frames)
