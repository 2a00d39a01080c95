"""Keep: every slot's stitched low-resolution layers, and the model's input, on disk until the pair is chosen.

``--layers best2`` publishes the two most dissimilar slots over the whole video, which are known only after
the last window. Composing and encoding every slot to throw most of them away was three quarters of the
encoding, so the first pass keeps what the composition needs (the stitched model outputs and the input at the
inference size, float16: the outputs are not bounded to [-1, 1], and float16 keeps them to about 0.06 of a
level) in a file in the output's temporary folder, and a second pass composes and encodes only the chosen two.
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


class LowResStore:
    """Frames appended in order, each ``[n + 1, 3, h, w]`` (the ``n`` layers, then the input), read back by slot."""

    def __init__(self, path: Path, n: int, size: tuple[int, int]):
        self.path, self.n, self.size = path, n, size
        self.frames = 0
        self._file = open(path, "wb")  # noqa: SIM115 (closed by close() or remove())
        self._map: np.memmap | None = None

    def add(self, low: Tensor, inputs_low: Tensor) -> None:
        """``low``: stitched layers ``[n, 3, c, h, w]``; ``inputs_low``: the model's input ``[3, c, h, w]``."""
        c = low.shape[2]
        w, h = self.size
        buf = np.empty((c, self.n + 1, 3, h, w), _DTYPE)  # one conversion, written as it is
        out = torch.from_numpy(buf)
        out[:, :self.n].copy_(low.permute(2, 0, 1, 3, 4))
        out[:, self.n].copy_(inputs_low.permute(1, 0, 2, 3))
        self._file.write(memoryview(buf).cast("B"))
        self.frames += c

    def read(self, slots: list[int], a: int, b: int) -> tuple[Tensor, Tensor]:
        """Frames ``a:b`` of ``slots`` and of the input: ``([k, 3, c, h, w], [3, c, h, w])`` float32."""
        if self._map is None:
            self._file.close()
            w, h = self.size
            self._map = np.memmap(self.path, _DTYPE, "r", shape=(self.frames, self.n + 1, 3, h, w))
        part = torch.from_numpy(np.ascontiguousarray(self._map[a:b, [*slots, self.n]]))
        both = part.permute(1, 2, 0, 3, 4).float()  # [k + 1, 3, c, h, w]
        return both[:-1], both[-1]

    def remove(self) -> None:
        """Close and delete the file (it is not an output)."""
        self._file.close()
        self._map = None
        self.path.unlink(missing_ok=True)
