"""Keep: every slot's stitched low-resolution layers, and the model's input, until the pair is chosen.

``--layers best2`` publishes the two most dissimilar slots over the whole video, which are known only after
the last window. Composing and encoding every slot to throw most of them away was three quarters of the
encoding, so the first pass keeps what the composition needs (the stitched model outputs and the input at the
inference size, float16: the outputs are not bounded to [-1, 1], and float16 keeps them to about 0.06 of a
level) and a second pass composes and encodes only the chosen two. The store grows with the video at the
inference size (4.7 MB a frame for 8 slots at 452x192: 1.17 GB for 250 frames), not at the input's.

Where it lives: a file in the output's temporary folder (:func:`fits`: whether the disk has room for it), so
the memory a run holds does not grow with the video. Holding the store in memory instead was measured and not
kept: 0.94 GB of ``bikes.mp4``'s 1.17 GB held saved 8% of the run for 1.89x its peak memory, and 256 MiB held
saved nothing measurable for 1.28x (docs/performance.md, "Separation speed").

Layout: each chunk of frames as it was added, each tensor in its own
memory order, so the copy is a block copy whatever the layout of the model's output (the plain
``[n, 3, T, h, w]``, or channels-last); with the plain layout one slot's frames of a chunk are one range, and
the second pass reads only the chosen pair and the input back from the file (a third of what was written for
8 slots; with channels-last, every slot of the chunk).

The model's input is kept, not recomputed from the decoded frames in the second pass: the runner's resize
would give the same values bit for bit (it works plane by plane), but its antialiased downsample costs about
six times the conversion and copy of the input into the store and back.
"""

from __future__ import annotations

import bisect
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from torch import Tensor

__all__ = ["LowResStore", "fits"]

_DTYPE = torch.float16
_ITEM = 2  # bytes of a float16
#: Room left free on the disk beyond the store itself (bytes).
_MARGIN = 1 << 30


def _frame_bytes(n: int, size: tuple[int, int]) -> int:
    """Bytes a frame takes in the store: ``n`` layers and the input, 3 channels at ``size`` (w, h)."""
    return (n + 1) * 3 * size[0] * size[1] * _ITEM


def fits(folder: Path, n: int, size: tuple[int, int], frames: int) -> bool:
    """Whether a store of ``frames`` frames (the expected count, with a tenth to spare) fits on ``folder``'s disk."""
    need = int(1.1 * max(frames, 1) * _frame_bytes(n, size))
    return shutil.disk_usage(folder).free >= need + _MARGIN


def _memory_order(x: Tensor) -> tuple[int, ...]:
    """``x``'s dimensions from the outermost in memory to the innermost."""
    return tuple(sorted(range(x.dim()), key=lambda d: (-x.stride(d), d)))


@dataclass(frozen=True)
class _Block:
    """A tensor stored in its own memory order: ``shape`` in that order, ``order`` the tensor's dimensions in
    that order; at byte ``offset`` of the file."""

    shape: tuple[int, ...]
    order: tuple[int, ...]
    offset: int

    def layout(self, index: int | None) -> tuple[list[int], list[int], int]:
        """(sizes, strides, first element) of the tensor, or of its ``index`` along the first dimension."""
        sizes, strides = [0] * len(self.shape), [0] * len(self.shape)
        stride = 1
        for d, size in zip(reversed(self.order), reversed(self.shape), strict=True):
            sizes[d], strides[d], stride = size, stride, stride * size
        first = self.offset // _ITEM
        if index is not None:
            first += index * strides[0]
            sizes, strides = sizes[1:], strides[1:]
        return sizes, strides, first


@dataclass(frozen=True)
class _Chunk:
    """``count`` frames from ``start``: the layers ``[n, 3, c, h, w]`` and the input ``[3, c, h, w]``."""

    start: int
    count: int
    layers: _Block
    inputs: _Block


class LowResStore:
    """Chunks of frames appended in order to the file ``path``, read back by slot and frame range."""

    def __init__(self, path: Path, n: int, size: tuple[int, int]):
        self.path, self.n, self.size = path, n, size
        self.frames = 0
        self.written = 0  # bytes in the file
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 (closed by remove())
        self._buf = torch.empty(0, dtype=_DTYPE)  # the copy written to the file, kept between chunks
        self._chunks: list[_Chunk] = []
        self._starts: list[int] = []  # the chunks' first frames, to find a frame's chunk
        self._read: dict[int, dict[tuple[int, int], Tensor]] = {}  # ranges read from the file, by chunk
        self._spare: list[Tensor] = []  # buffers of ranges let go, to read the next ones into

    def add(self, low: Tensor, inputs_low: Tensor) -> None:
        """``low``: stitched layers ``[n, 3, c, h, w]``; ``inputs_low``: the model's input ``[3, c, h, w]``,
        each copied in its own memory order (a block copy whatever the model's layout)."""
        blocks = self._put(low), self._put(inputs_low)
        self._chunks.append(_Chunk(self.frames, low.shape[2], *blocks))
        self._starts.append(self.frames)
        self.frames += low.shape[2]

    def _put(self, x: Tensor) -> _Block:
        order = _memory_order(x)
        src = x.permute(order)
        count = src.numel()
        block = _Block(tuple(src.shape), order, self.written)
        if self._buf.numel() < count:
            self._buf = torch.empty(count, dtype=_DTYPE)
        dest = self._buf[:count]
        dest.view(src.shape).copy_(src)
        self._file.write(dest.numpy().data.cast("B"))
        self.written += count * _ITEM
        return block

    def _view(self, i: int, block: _Block, index: int | None) -> Tensor:
        """Chunk ``i``'s ``block``, or its ``index`` along the first dimension, float16, read from the file (the
        one range holding it, once per chunk)."""
        sizes, strides, first = block.layout(index)
        span = sum((s - 1) * st for s, st in zip(sizes, strides, strict=True)) + 1
        ranges = self._read.setdefault(i, {})
        if (first, span) not in ranges:
            ranges[first, span] = self._load(first, span)
        return ranges[first, span][:span].as_strided(sizes, strides)

    def _load(self, first: int, span: int) -> Tensor:
        """``span`` values of the file from value ``first``, at the start of the buffer returned. Read, not
        mapped (a mapping would keep every page read resident in this process until the end), into a buffer let
        go by an earlier chunk where one is large enough: fresh memory costs a page fault every 4 KB, about as
        much as the read itself."""
        fit = [(buf.numel(), k) for k, buf in enumerate(self._spare) if buf.numel() >= span]
        buf = self._spare.pop(min(fit)[1]) if fit else torch.empty(span, dtype=_DTYPE)
        self._file.seek(first * _ITEM)
        if self._file.readinto(buf[:span].numpy().data.cast("B")) != span * _ITEM:
            raise OSError(f"{self.path} is shorter than what was written to it")
        return buf

    def read(self, slots: list[int], a: int, b: int) -> tuple[Tensor, Tensor]:
        """Frames ``a:b`` of ``slots`` and of the input: ``([k, 3, c, h, w], [3, c, h, w])`` float32 (frames are
        read in order: what was read from the file for earlier chunks is let go)."""
        if self._file.mode == "wb":
            self._file.close()
            self._file = open(self.path, "rb")  # noqa: SIM115 (closed by remove())
        w, h = self.size
        layers, inputs = torch.empty(len(slots), 3, b - a, h, w), torch.empty(3, b - a, h, w)
        first = max(0, bisect.bisect_right(self._starts, a) - 1)
        for i in [i for i in self._read if i < first]:
            self._spare.extend(self._read.pop(i).values())
        for i in range(first, len(self._chunks)):
            chunk = self._chunks[i]
            lo, hi = max(a, chunk.start), min(b, chunk.start + chunk.count)
            if lo >= hi:
                break
            frames = slice(lo - chunk.start, hi - chunk.start)
            for dest, slot in zip(layers, slots, strict=True):
                dest[:, lo - a:hi - a].copy_(self._view(i, chunk.layers, slot)[:, frames])
            inputs[:, lo - a:hi - a].copy_(self._view(i, chunk.inputs, None)[:, frames])
        return layers, inputs

    def remove(self) -> None:
        """Close and delete the file (it is not an output)."""
        self._read.clear()
        self._spare.clear()
        self._file.close()
        self.path.unlink(missing_ok=True)
