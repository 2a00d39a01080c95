"""Previews: the contact sheet (sampled frames: input | layers) and the preview video (input and the chosen
layers side by side, each panel labelled), and the recomposition figure of the written files.

What the preview's layer panels show: with the default deferred composition (``sinks``) the pair is chosen
before its layers are composed, so the preview is made in the same pass as the layer files, from the very
frames handed to their encoder; the files differ from those by their own H.264 coding error (CRF 18), below
what the preview's own encoding (CRF 18 again) keeps. Reading the files back instead would cost a third
decoding of the input and two of the files, and show the layers coded twice. Where the pair is known only
after every slot's file is written (the direct way: ``--layers all``, tiles, two-slot models, no room for the
store), the preview is made from the files, decoded, as before. ``chosen_pair_encoded`` is always the files
themselves, decoded, against the input (:func:`encoded_recomposition`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..frames import resize_frames
from ..video import iter_frames
from ..video_writer import VideoWriter
from .output import CRF, LAYER_NAME, X264_PRESET
from .stats import quality

__all__ = ["ContactSheet", "PreviewVideo", "encoded_recomposition", "panel_labels", "thumbnail",
           "write_contact_sheet", "write_preview"]

_CONTACT_ROWS = 4
_CONTACT_CELL_H = 128
_PREVIEW_MAX_H = 360
_PREVIEW_MAX_W = 640
_LABEL_H = 18


def _label(text: str, width: int, height: int = _LABEL_H) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (width, height), (0, 0, 0))
    ImageDraw.Draw(img).text((4, 2), text, fill=(255, 255, 255), font=ImageFont.load_default())
    return np.asarray(img)


def thumbnail(frame: np.ndarray, height: int) -> np.ndarray:
    """``uint8 [H, W, 3]`` frame resized to ``height`` rows, keeping its aspect ratio."""
    from PIL import Image

    h, w = frame.shape[:2]
    width = max(1, round(w * height / h))
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))


def write_contact_sheet(path: Path, rows: list[tuple[int, list[np.ndarray]]], names: list[str]) -> None:
    """Rows = sampled frames, columns = input | layers, with a header of column names."""
    from PIL import Image, ImageDraw, ImageFont

    cell_w = rows[0][1][0].shape[1]
    header = np.concatenate([_label(name, cell_w) for name in names], axis=1)
    body = [np.concatenate(cells, axis=1) for _, cells in rows]
    sheet = Image.fromarray(np.concatenate([header, *body], axis=0))
    draw = ImageDraw.Draw(sheet)
    for r, (index, _) in enumerate(rows):
        draw.text((4, _LABEL_H + r * _CONTACT_CELL_H + 2), f"frame {index}", fill=(255, 255, 0),
                  font=ImageFont.load_default())
    sheet.save(path, format="PNG")


class ContactSheet:
    """Collects thumbnails of :data:`_CONTACT_ROWS` frames spread over the video as they pass."""

    def __init__(self, frames_expected: int):
        self.at = sorted({int(round(x)) for x in np.linspace(0, max(frames_expected - 1, 0), _CONTACT_ROWS)})
        self.inputs: dict[int, np.ndarray] = {}
        self.thumbs: dict[int, dict[int, np.ndarray]] = {}  # frame -> slot -> thumbnail

    def add(self, start: int, video: np.ndarray, layers: np.ndarray, slots: list[int]) -> None:
        """``video``: input frames ``[c, H, W, 3]`` from frame ``start``; ``layers``: ``[k, c, H, W, 3]`` of
        ``slots``."""
        for t in range(video.shape[0]):
            if start + t in self.at:
                self.inputs[start + t] = thumbnail(video[t], _CONTACT_CELL_H)
                cells = self.thumbs.setdefault(start + t, {})
                cells.update({k: thumbnail(layers[i, t], _CONTACT_CELL_H) for i, k in enumerate(slots)})

    def write(self, path: Path, order: list[int], names: list[str]) -> None:
        """Columns: the input, then the slots of ``order`` named ``names`` (nothing when no frame passed)."""
        rows = [(i, [self.inputs[i]] + [cells[k] for k in order]) for i, cells in sorted(self.thumbs.items())]
        if rows:
            write_contact_sheet(path, rows, ["input"] + [Path(name).stem for name in names])


def panel_labels(chosen: tuple[int, int] | list[int], order: list[int]) -> list[str]:
    """The preview's labels: the input, then each chosen slot's layer file (``order``: the slot of each file)."""
    return ["input"] + [f"{Path(LAYER_NAME.format(order.index(k))).stem} (slot {k})" for k in chosen]


def _fit(frames: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """``uint8 [c, H, W, 3]`` frames resized to ``ph`` x ``pw`` (bilinear, antialiased when shrinking).

    Resized in uint8 as channels-last images (:func:`~centrifuge.frames.resize_frames` on the frames as they lie:
    torch's integer path, 10-20x faster than through float planes, within one level of it); the result is a
    ``[c, ph, pw, 3]`` view."""
    if frames.shape[1:3] == (ph, pw):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)
    return resize_frames(x, (ph, pw)).permute(1, 2, 3, 0).numpy()


class PreviewVideo:
    """``preview.mp4``: the input and the chosen layers side by side, each panel under its label.

    Panels fit 640x360; small videos are enlarged (at most 4x) so that the labels fit. A context manager (the
    file is published on a clean exit, dropped on an error, as :class:`VideoWriter`'s). As a sink it takes the
    composed frames of the chosen slots (``chosen``), those handed to the layer files' encoder.
    """

    def __init__(self, path: Path, fps: float, labels: list[str], width: int, height: int,
                 chosen: list[int] | None = None):
        scale = min(4.0, _PREVIEW_MAX_H / height, _PREVIEW_MAX_W / width)
        self.pw, self.ph = max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2))
        self.header = np.concatenate([_label(name, self.pw) for name in labels], axis=1)
        self.chosen = chosen
        self.writer = VideoWriter(path, fps, self.pw * len(labels), self.ph + _LABEL_H, crf=CRF,
                                  preset=X264_PRESET)

    def add(self, start: int, video: np.ndarray, layers: np.ndarray, slots: list[int]) -> None:
        """The sink: ``video`` (the input) and ``layers`` (``[k, c, H, W, 3]`` of ``slots``, the chosen among
        them)."""
        assert self.chosen is not None
        self.write([video, *(layers[slots.index(k)] for k in self.chosen)])

    def write(self, frames: list[np.ndarray]) -> None:
        """One panel per array of ``uint8 [c, H, W, 3]`` frames (the first ``c`` of each), in label order."""
        c = min(len(f) for f in frames)
        # One buffer per batch, the header written once into it: each panel is copied once.
        out = np.empty((c, _LABEL_H + self.ph, self.header.shape[1], 3), np.uint8)
        out[:, :_LABEL_H] = self.header
        for i, f in enumerate(frames):
            out[:, _LABEL_H:, i * self.pw:(i + 1) * self.pw] = _fit(f[:c], self.ph, self.pw)
        self.writer.write(out)

    def close(self) -> None:
        """Flush the encoder and move the file into place."""
        self.writer.close()

    def __enter__(self) -> PreviewVideo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.writer.__exit__(*exc)  # type: ignore[arg-type]


class _Recomposition:
    """How well the mean of ``k`` uint8 layers recomposes the input, summed exactly in integers."""

    def __init__(self, k: int):
        self.k, self.abs_sum, self.sq_sum, self.pixels = k, 0, 0, 0

    def add(self, video: np.ndarray, layers: list[np.ndarray]) -> None:
        # The layers' mean minus the input, in units of 1/k level: integers, summed exactly. int16 holds them
        # for k <= 128 (the pair: k = 2); einsum squares and sums in int64 without a temporary (with the int16
        # arithmetic 3-4x less CPU than int32 arrays and np.square).
        assert self.k <= 128
        err = layers[0].astype(np.int16)
        for layer in layers[1:]:
            err += layer
        for _ in layers:
            err -= video
        flat = err.reshape(-1)
        self.abs_sum += int(np.abs(flat).sum(dtype=np.int64))
        self.sq_sum += int(np.einsum("i,i->", flat, flat, dtype=np.int64))
        self.pixels += flat.size // 3

    def quality(self) -> dict[str, float]:
        return quality(self.abs_sum / 3, self.sq_sum / 3, self.pixels, scale=1 / self.k)


def _decoded(inputs: Iterator[np.ndarray], layer_files: list[Path], batch: int) -> Iterator[list[np.ndarray]]:
    """The input's batches beside the same frames of the layer files, decoded (``[input, *layers]``)."""
    streams = [inputs] + [iter_frames(p, batch=batch) for p in layer_files]
    for batches in zip(*streams, strict=False):
        c = min(len(b) for b in batches)
        yield [b[:c] for b in batches]


def encoded_recomposition(inputs: Iterator[np.ndarray], layer_files: list[Path], batch: int) -> dict[str, float]:
    """``layers.json``'s ``chosen_pair_encoded``: how well the mean of the layer files, decoded, recomposes the
    input (``inputs``: the input's frames again, ``batch`` at a time; see :func:`.stats.quality`)."""
    rec = _Recomposition(len(layer_files))
    for x in _decoded(inputs, layer_files, batch):
        rec.add(x[0], x[1:])
    return rec.quality()


def write_preview(path: Path, fps: float, inputs: Iterator[np.ndarray], layer_files: list[Path],
                  labels: list[str], width: int, height: int, batch: int) -> dict[str, float]:
    """The preview of the files written (the direct way, where the pair is known only once every slot's file
    is written): the input and the layer files, decoded, side by side; returns :func:`encoded_recomposition`'s
    figure, summed on the same reading."""
    rec = _Recomposition(len(layer_files))
    with PreviewVideo(path, fps, labels, width, height) as preview:
        for x in _decoded(inputs, layer_files, batch):
            rec.add(x[0], x[1:])
            preview.write(x)
    return rec.quality()
