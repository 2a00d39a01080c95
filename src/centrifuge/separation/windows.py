"""Window: the schedule of the clips given to the model.

Windows of ``window`` frames start every ``hop = window - overlap`` frames. The last window is moved back so
that it ends on the last frame (it then overlaps its predecessor more); a video shorter than one window is one
window, which the runner pads by ping-pong repetition of its frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["Window", "windows", "pingpong"]


@dataclass(frozen=True)
class Window:
    """One step of the schedule.

    ``clip``: the frames for the model, or None at the end: then the stitcher's kept tail is the last chunk.
    ``skip``: leading frames of the model's output that earlier windows already covered (the moved-back last
    window). ``emit``: how many frames the stitcher returns as final (None: all). ``frames``: the input frames
    from the first one not emitted yet (the frames the returned chunk belongs to).
    """

    clip: list[np.ndarray] | None
    skip: int
    emit: int | None
    frames: list[np.ndarray]


def windows(frames: Iterator[np.ndarray], window: int, hop: int) -> Iterator[Window]:
    """The windows over a stream of frames, keeping only the current window and its overlap in memory."""
    buf: list[np.ndarray] = []
    buf_start = 0  # index of buf[0]
    s = 0  # start of the next window == first frame not yet emitted
    prev_end = 0  # end of the last window run
    eof = False
    while True:
        while not eof and buf_start + len(buf) < s + window:
            frame = next(frames, None)
            if frame is None:
                eof = True
            else:
                buf.append(frame)
        i = s - buf_start
        if not eof:
            yield Window(buf[i:i + window], 0, hop, buf[i:i + hop])
            del buf[:i]  # keep from s: the last window may reach back this far
            buf_start, prev_end, s = s, s + window, s + hop
            continue
        end = buf_start + len(buf)
        if end > prev_end:
            first = max(0, end - window, buf_start)
            yield Window(buf[first - buf_start:], s - first, None, buf[i:])
        else:
            yield Window(None, 0, None, buf[i:])
        return


def pingpong(length: int, total: int) -> np.ndarray:
    """Indices ``0, 1, ..., length-1, length-2, ..., 0, 1, ...`` of size ``total`` (temporal reflection)."""
    if length == 1:
        return np.zeros(total, dtype=np.int64)
    period = 2 * (length - 1)
    i = np.arange(total) % period
    return np.where(i < length, i, period - i)
