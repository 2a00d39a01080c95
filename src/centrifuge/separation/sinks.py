"""Sinks: where the stitched frames go. Composed at the input resolution (``compose``), they feed the statistics
(``stats``), the layer files (``output``), the contact sheet's thumbnails (``previews``) and, for a result kept
in memory, the layers themselves.

Two ways through, the same outputs (to within a level of rounding):

* **direct** (``--layers all``, a result without files, a disk without room for the store, a model of two
  slots, tiles): every slot is composed and delivered as its frames are final;
* **deferred** (``--layers best2`` with files, the default): the first pass keeps every slot at the inference
  size (``store``, a temporary file) and composes at full
  resolution only the frames the statistics read; once the pair is chosen, a second pass decodes the input
  again and composes and encodes only the chosen two slots, and makes ``preview.mp4`` from the same frames
  (``previews``: input | chosen layers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

import numpy as np
from torch import Tensor

from ..errors import CentrifugeError
from .compose import COMPOSE_BUDGET, compose, compose_uint8
from .output import PREVIEW_NAME, LayerFiles, Output
from .previews import ContactSheet, PreviewVideo, panel_labels
from .runner import Geometry
from .source import Source
from .stats import Stats, most_dissimilar, sampled
from .store import LowResStore, fits

__all__ = ["Kept", "Sinks", "Timer"]

Timer = Callable[[str], contextlib.AbstractContextManager[None]]


class _Sink(Protocol):
    def add(self, start: int, video: np.ndarray, layers: np.ndarray, slots: list[int]) -> None: ...


class Kept:
    """The layers kept in memory, for a result without files (the slots delivered)."""

    def __init__(self) -> None:
        self.frames: dict[int, list[np.ndarray]] = {}

    def add(self, start: int, video: np.ndarray, layers: np.ndarray, slots: list[int]) -> None:
        for i, k in enumerate(slots):
            self.frames.setdefault(k, []).append(layers[i])

    def layers(self, order: list[int]) -> np.ndarray:
        return np.stack([np.concatenate(self.frames[k]) for k in order])


class Sinks:
    """Opened at the first chunk (it tells ``n``): :meth:`add` takes each chunk of final frames, :meth:`close`
    ends the run (the second pass, when deferred, calling ``written(frames, frames_done)`` after each chunk) and
    closes the layer files."""

    def __init__(self, source: Source, layers: str, detail: bool, geometry: Geometry, output: Output | None,
                 timer: Timer, stack: contextlib.ExitStack, written: Callable[[int, int], None] | None = None):
        self.source, self.best2, self.detail, self.geometry = source, layers == "best2", detail, geometry
        self.output, self.timer, self.stack, self.written = output, timer, stack, written
        self.stats: Stats | None = None
        self.files: LayerFiles | None = None
        self.contact = ContactSheet(source.frames_expected) if output is not None else None
        self.kept = Kept() if source.array is not None or output is None else None
        self.store: LowResStore | None = None
        self.preview: PreviewVideo | None = None  # made here only by the second pass
        self.chosen: tuple[int, int] | None = None  # the most dissimilar pair (Sec. 3.2), set by close()
        self.done = 0

    def _open(self, n: int) -> None:
        if n < 2:
            raise CentrifugeError(f"the model has {n} output layer; separation needs at least 2")
        self.stats = Stats(n)
        if self.output is None:
            return
        # Tiles run at full resolution, where keeping every slot would cost more than encoding it.
        if self.best2 and n > 2 and not self.geometry.tile \
                and fits(self.output.tmp, n, self.geometry.size, self.source.frames_expected):
            self.store = LowResStore(self.output.path("lowres"), n, self.geometry.size)
        else:
            self.files = self._layer_files(list(range(n)))

    @property
    def deferred(self) -> bool:
        """Whether :meth:`close` makes a second pass (known from the first chunk on)."""
        return self.store is not None

    def _layer_files(self, slots: list[int]) -> LayerFiles:
        assert self.output is not None
        src = self.source
        return LayerFiles(self.output, slots, src.rate, src.width, src.height, self.stack)

    def add(self, chunk: Tensor, inputs_low: Tensor, frames: list[np.ndarray]) -> int:
        """Take the final frames of ``chunk`` (``[n, 3, c, h, w]``, of ``frames[:c]``; ``inputs_low``: the model's
        input ``[3, c, h, w]``); returns ``c``."""
        n, c = chunk.shape[0], chunk.shape[2]
        if c == 0:
            return 0
        if self.stats is None:
            self._open(n)
        if self.store is not None:
            with self.timer("stitch"):
                self.store.add(chunk, inputs_low)
        self._statistics(chunk, inputs_low, frames)
        if self.store is None:
            self._deliver(chunk, inputs_low, frames, self.done, list(range(n)))
        self.done += c
        return c

    def _statistics(self, chunk: Tensor, inputs_low: Tensor, frames: list[np.ndarray]) -> None:
        """Compose (in float, every slot) only the frames the statistics read."""
        assert self.stats is not None
        sel = sampled(self.done, chunk.shape[2])
        if sel:
            with self.timer("compose"):
                for part in compose(chunk[:, :, sel], [frames[t] for t in sel], 0, self.geometry, self.detail,
                                    inputs_low[:, sel]):
                    self.stats.add(part)

    def _deliver(self, low: Tensor, inputs_low: Tensor, frames: list[np.ndarray] | np.ndarray, start: int,
                 slots: list[int]) -> None:
        """Compose the frames of ``low`` (the layers of ``slots``) as written and hand them to the sinks."""
        sinks: list[_Sink] = [s for s in (self.files, self.contact, self.kept, self.preview) if s is not None]
        pieces = compose_uint8(low, frames, start, self.geometry, self.detail, inputs_low)
        while True:
            with self.timer("compose"):
                piece = next(pieces, None)
            if piece is None:
                break
            for sink in sinks:
                with self._timed(sink):
                    sink.add(*piece, slots)

    def _timed(self, sink: _Sink) -> contextlib.AbstractContextManager[None]:
        """The layer files count as ``encode``, the preview as ``finish`` (as when it was made at the end)."""
        if sink is self.files:
            return self.timer("encode")
        return self.timer("finish") if sink is self.preview else contextlib.nullcontext()

    def close(self) -> None:
        """After the last chunk: the pair chosen, the second pass (deferred), then the layer files and the
        preview closed."""
        assert self.stats is not None
        self.chosen = most_dissimilar(self.stats.distances())
        if self.store is not None:
            self._second_pass(self.store)
        if self.files is not None:
            with self.timer("encode"):
                self.files.close()
        if self.preview is not None:
            with self.timer("finish"):
                self.preview.close()

    def _second_pass(self, store: LowResStore) -> None:
        """Decode the input again; compose the chosen pair from the store, encode it and its preview."""
        assert self.chosen is not None and self.output is not None
        slots = list(self.chosen)
        self.files = self._layer_files(slots)
        src = self.source
        self.preview = self.stack.enter_context(PreviewVideo(
            self.output.path(PREVIEW_NAME), src.rate, panel_labels(slots, slots), src.width, src.height, slots))
        width, height = self.geometry.full
        batches = self.source.batches(max(1, COMPOSE_BUDGET // (len(slots) * 3 * height * width)))
        start = 0
        while start < self.done:
            with self.timer("decode"):
                video = next(batches, None)
            if video is None:
                raise CentrifugeError(f"the input gave {start} frames on its second reading, {self.done} on its first")
            c = min(len(video), self.done - start)
            with self.timer("compose"):
                low, inputs_low = store.read(slots, start, start + c)
            self._deliver(low, inputs_low, video[:c], start, slots)
            start += c
            if self.written is not None:  # progress, and the caller's chance to stop the run here
                self.written(c, start)
        store.remove()
