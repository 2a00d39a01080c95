"""Previews: the contact sheet (sampled frames: input | layers) and the preview video (input and the chosen
layers side by side, re-read from the files just written, each panel labelled)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..frames import resize, to_model, to_uint8
from ..video import iter_frames
from ..video_writer import VideoWriter
from .output import CRF, X264_PRESET
from .stats import quality

__all__ = ["ContactSheet", "thumbnail", "write_contact_sheet", "write_preview"]

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


def _panels(frames: list[np.ndarray], ph: int, pw: int) -> np.ndarray:
    """``uint8 [c, H, W, 3]`` frames side by side, each resized to ``ph`` x ``pw`` (bilinear)."""
    if frames[0].shape[1:3] == (ph, pw):
        return np.concatenate(frames, axis=2)
    return np.concatenate([to_uint8(resize(to_model(f), (ph, pw)).clamp_(-1, 1)) for f in frames], axis=2)


def write_preview(path: Path, fps: float, inputs: Iterator[np.ndarray], layer_files: list[Path],
                  names: list[str], width: int, height: int, batch: int) -> dict[str, float]:
    """Input and chosen layers side by side (re-read from the encoded files), each panel with a label.

    Returns how well the mean of the decoded layers recomposes the input (see :func:`.stats.quality`).
    """
    # Fit 640x360 per panel; small videos are enlarged (at most 4x) so that the labels fit.
    scale = min(4.0, _PREVIEW_MAX_H / height, _PREVIEW_MAX_W / width)
    pw, ph = max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2))
    header = np.concatenate([_label(name, pw) for name in names], axis=1)
    streams = [inputs] + [iter_frames(p, batch=batch) for p in layer_files]
    k = len(layer_files)
    abs_sum = sq_sum = pixels = 0
    with VideoWriter(path, fps, pw * len(names), ph + _LABEL_H, crf=CRF, preset=X264_PRESET) as writer:
        for batches in zip(*streams, strict=False):
            c = min(len(b) for b in batches)
            x = [b[:c] for b in batches]
            # The layers' mean minus the input, in units of 1/k level: integers, summed exactly.
            err = x[1].astype(np.int32)
            for layer in x[2:]:
                err += layer
            err -= k * x[0].astype(np.int32)
            abs_sum += int(np.abs(err).sum(dtype=np.int64))
            sq_sum += int(np.square(err).sum(dtype=np.int64))
            pixels += err.size // 3
            frames = _panels(x, ph, pw)
            writer.write(np.concatenate([np.broadcast_to(header, (c, *header.shape)), frames], axis=1))
    return quality(abs_sum / 3, sq_sum / 3, pixels, scale=1 / k)
