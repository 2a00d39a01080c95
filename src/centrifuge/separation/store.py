"""Keep: every slot's stitched low-resolution layers, and the model's input, on disk until the pair is chosen.

``--layers best2`` publishes the two most dissimilar slots over the whole video, which are known only after
the last window. Composing and encoding every slot to throw most of them away was three quarters of the
encoding, so the first pass keeps what the composition needs (the stitched model outputs and the input at the
inference size, float16: the outputs are not bounded to [-1, 1], and float16 keeps them to about 0.06 of a
level) in files in the output's temporary folder, and a second pass composes and encodes only the chosen two.
The file grows with the video at the inference size (about 4.7 MB a frame for 8 slots at 452x192), not at the
input's; :func:`fits` says whether the disk has room for it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["LowResStore", "fits"]

_DTYPE = np.float16
#: Room left free on the disk beyond the store itself (bytes).
_MARGIN = 1 << 30


def _frame_bytes(n: int, size: tuple[int, int]) -> int:
    """Bytes a frame takes in the store: ``n`` layers and the input, 3 channels at ``size`` (w, h)."""
    return (n + 1) * 3 * size[0] * size[1] * np.dtype(_DTYPE).itemsize


def fits(folder: Path, n: int, size: tuple[int, int], frames: int) -> bool:
    """Whether a store of ``frames`` frames (the expected count, with a tenth to spare) fits on ``folder``'s disk."""
    need = int(1.1 * max(frames, 1) * _frame_bytes(n, size))
    return shutil.disk_usage(folder).free >= need + _MARGIN


def _frames(path: Path, frame: tuple[int, ...], a: int, b: int) -> np.ndarray:
    """Frames ``a:b`` of a file of frames shaped ``frame``."""
    size = int(np.prod(frame))
    data = np.fromfile(path, _DTYPE, count=(b - a) * size, offset=a * size * np.dtype(_DTYPE).itemsize)
    return data.reshape(b - a, *frame)


class LowResStore:
    """Frames appended in order, read back by slot: the layers as ``[h, w, n, 3]`` per frame (the model's
    channels-last output is copied as it lies; another order only costs a slower copy), the input as
    ``[3, h, w]``, in two files ``path.layers`` and ``path.input``."""

    def __init__(self, path: Path, n: int, size: tuple[int, int]):
        self.paths = (path.with_suffix(".layers"), path.with_suffix(".input"))
        self.n, self.size = n, size
        self.frames = 0
        self._files = [open(p, "wb") for p in self.paths]  # noqa: SIM115 (closed by read() or remove())
        self._bufs = [np.empty(0, _DTYPE), np.empty(0, _DTYPE)]

    def add(self, low: Tensor, inputs_low: Tensor) -> None:
        """``low``: stitched layers ``[n, 3, c, h, w]``; ``inputs_low``: the model's input ``[3, c, h, w]``."""
        for k, x in enumerate((low.permute(2, 3, 4, 0, 1), inputs_low.permute(1, 0, 2, 3))):
            # one conversion into a buffer kept between calls (fresh pages cost a fault each), written as it is
            if self._bufs[k].shape != x.shape:
                self._bufs[k] = np.empty(tuple(x.shape), _DTYPE)
            torch.from_numpy(self._bufs[k]).copy_(x)
            self._files[k].write(memoryview(self._bufs[k]).cast("B"))
        self.frames += low.shape[2]

    def read(self, slots: list[int], a: int, b: int) -> tuple[Tensor, Tensor]:
        """Frames ``a:b`` of ``slots`` and of the input: ``([k, 3, c, h, w], [3, c, h, w])`` float32."""
        if not self._files[0].closed:
            for file in self._files:
                file.close()
        w, h = self.size
        # Read, not mapped: a mapping would keep every page read resident in this process until the end.
        layers = _frames(self.paths[0], (h, w, self.n, 3), a, b)[:, :, :, slots]
        inputs = _frames(self.paths[1], (3, h, w), a, b)
        return (torch.from_numpy(layers).permute(3, 4, 0, 1, 2).float(),
                torch.from_numpy(inputs).permute(1, 0, 2, 3).float())

    def remove(self) -> None:
        """Close and delete the files (they are not outputs)."""
        for file in self._files:
            file.close()
        for path in self.paths:
            path.unlink(missing_ok=True)
