"""Decode: the input of a separation (a video file or a frames array), what is known of it before the run, and
its frames as a stream, so that only the current window stays in memory."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CentrifugeError
from ..video import check_video, iter_frames

__all__ = ["Source", "open_source"]

DEFAULT_FPS = 25.0


@dataclass(frozen=True)
class Source:
    """``array``: the frames when given as an array, else None and ``path`` is the file."""

    array: np.ndarray | None
    path: Path | None
    frames_expected: int  # the header's count for a file (an estimate for some files)
    width: int
    height: int
    rate: float  # frame rate of the outputs
    meta: dict[str, Any]  # layers.json's "input"

    def frames(self, timed: Callable[[], contextlib.AbstractContextManager]) -> Iterator[np.ndarray]:
        """The frames one by one; decoding runs inside ``timed()``."""
        if self.array is not None:
            yield from self.array
            return
        it = iter_frames(self.path, batch=8)
        while True:
            with timed():
                batch = next(it, None)
            if batch is None:
                return
            yield from batch

    def batches(self, batch: int) -> Iterator[np.ndarray]:
        """The frames again, ``batch`` at a time (for the preview, after the layers are written)."""
        if self.array is not None:
            return iter([self.array[i:i + batch] for i in range(0, len(self.array), batch)])
        return iter_frames(self.path, batch=batch)


def _as_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise CentrifugeError(f"expected frames [T, H, W, 3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise CentrifugeError(f"expected uint8 frames, got {frames.dtype}")
    if frames.shape[0] == 0:
        raise CentrifugeError("no frames to separate")
    return frames


def open_source(path_or_frames: Any, fps: float | None) -> Source:
    """Check the input (before the model is loaded, so that bad input fails fast) and describe it."""
    if isinstance(path_or_frames, np.ndarray):
        array = _as_frames(path_or_frames)
        total, height, width = array.shape[0], array.shape[1], array.shape[2]
        meta: dict[str, Any] = {"path": None, "frames": total, "width": width, "height": height}
        return Source(array, None, total, width, height, float(fps or DEFAULT_FPS), meta)
    path = Path(path_or_frames)
    info = check_video(path)
    meta = {"path": str(path), "frames_in_header": info.num_frames, "width": info.width, "height": info.height,
            "fps": info.fps, "rotation": info.rotation, "duration_s": info.duration}
    return Source(None, path, info.num_frames, info.width, info.height, float(fps or info.fps), meta)
