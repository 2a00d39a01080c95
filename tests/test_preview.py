"""``preview.mp4`` and ``chosen_pair_encoded``: the panels are the input and the chosen layers (made in the second
pass of the default way, from the decoded files on the direct way), and the figure is the written files,
decoded, against the input."""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest
import torch
from test_separate_figures import Offsets, _frames

import centrifuge
from centrifuge.frames import resize, to_model, to_uint8
from centrifuge.separation import previews, sinks
from centrifuge.separation.previews import _LABEL_H, PreviewVideo, _fit
from centrifuge.video import read_video

OFFSETS = [0.0, 0.1, -0.3, 0.25]  # chosen pair (2, 3)


class _Frames:
    """Stands in for the preview's encoder: keeps what it is given."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def write(self, frames: np.ndarray) -> None:
        self.frames.append(frames.copy())

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.mark.parametrize(("h", "w"), [(24, 32), (720, 1280), (27, 35)])
def test_panel_resize_in_levels_matches_the_float_resize(h, w):
    x = np.random.default_rng(0).integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    scale = min(4.0, 360 / h, 640 / w)
    ph, pw = max(2, 2 * round(h * scale / 2)), max(2, 2 * round(w * scale / 2))
    want = to_uint8(resize(to_model(x), (ph, pw)).clamp_(-1, 1))
    got = _fit(x, ph, pw)
    assert got.shape == want.shape == (2, ph, pw, 3)
    assert np.abs(got.astype(np.int16) - want).max() <= 1


def test_preview_frames_are_the_label_row_over_the_panels(tmp_path):
    video = np.random.default_rng(1).integers(0, 256, (3, 24, 32, 3), dtype=np.uint8)
    layers = np.stack([255 - video, video // 2, video[:, ::-1]])  # slots 4, 7, 9
    preview = PreviewVideo(tmp_path / "p.mp4", 25, ["input", "a", "b"], 32, 24, chosen=[9, 4])
    preview.writer.__exit__(RuntimeError, RuntimeError(), None)  # no file: the frames are kept below
    preview.writer = _Frames()  # type: ignore[assignment]
    preview.add(0, video, layers, [4, 7, 9])
    (out,) = preview.writer.frames  # type: ignore[attr-defined]
    ph, pw = preview.ph, preview.pw
    assert (ph, pw) == (96, 128) and out.shape == (3, _LABEL_H + ph, 3 * pw, 3)
    assert (out[:, :_LABEL_H] == preview.header).all() and out[:, :_LABEL_H].any()
    for i, panel in enumerate([video, layers[2], layers[0]]):  # the input, then the chosen slots in order
        np.testing.assert_array_equal(out[:, _LABEL_H:, i * pw:(i + 1) * pw], _fit(panel, ph, pw))
    assert not (tmp_path / "p.mp4").exists()


def _panels(path, n: int) -> list[np.ndarray]:
    frames = read_video(path)[:, _LABEL_H:]
    pw = frames.shape[2] // n
    return [frames[:, :, i * pw:(i + 1) * pw].astype(np.float64) for i in range(n)]


def _recomposition(video: np.ndarray, files: list[np.ndarray]) -> tuple[float, float]:
    """L1 and PSNR of the files' mean against the input, in float64 (not the integer sums of ``previews``)."""
    err = np.mean([f.astype(np.float64) for f in files], axis=0) - video
    return float(np.abs(err).mean()), 10 * math.log10(255**2 / float(np.square(err).mean()))


@pytest.mark.parametrize("deferred", [True, False])
def test_preview_shows_the_input_and_the_chosen_layers(tmp_path, monkeypatch, deferred):
    """Both ways: panels are the input and the chosen layers (in order), and ``chosen_pair_encoded`` is the
    decoded files against the input; the default way makes the preview in its second pass, without reading
    the files back for it."""
    made, write = [], previews.write_preview
    monkeypatch.setattr(importlib.import_module("centrifuge.separate"), "write_preview",
                        lambda *a: made.append(a) or write(*a))
    if not deferred:
        monkeypatch.setattr(sinks, "fits", lambda *a: False)
    video, out = _frames(), tmp_path / "out"
    result = centrifuge.separate(video, model=Offsets(OFFSETS), out_dir=out, progress=False, device="cpu")
    assert result.chosen == (2, 3) and bool(made) == (not deferred)
    files = [read_video(out / name) for name in ("layer_0.mp4", "layer_1.mp4")]
    panels = _panels(out / "preview.mp4", 3)
    for panel, want in zip(panels, [video, *files], strict=True):
        big = _fit(want, *panel.shape[1:3]).astype(np.float64)
        assert np.abs(panel - big).mean() < 4  # the coding error (4:2:0); the panels are 32-70 levels apart
    # each layer panel is its own layer, not the other (they are 0.55 * 127.5 = 70 levels apart)
    assert np.abs(panels[1] - panels[2]).mean() > 50
    meta = json.loads((out / "layers.json").read_text())
    enc = meta["recomposition"]["chosen_pair_encoded"]
    l1, psnr = _recomposition(video, files)
    assert enc["l1"] == pytest.approx(l1, abs=1e-4) and enc["psnr_db"] == pytest.approx(psnr, abs=1e-3)
    assert torch.isfinite(torch.tensor(psnr))


def test_recomposition_figure_is_exact_at_the_extremes():
    """Errors up to 2 x 255 (white layers over a black input) and random ones, against float64 sums."""
    rng = np.random.default_rng(2)
    video = rng.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    video[0] = 0
    layers = [rng.integers(0, 256, video.shape, dtype=np.uint8) for _ in range(2)]
    layers[0][0] = layers[1][0] = 255
    rec = previews._Recomposition(2)
    rec.add(video[:2], [f[:2] for f in layers])
    rec.add(video[2:], [f[2:] for f in layers])
    l1, psnr = _recomposition(video, layers)
    assert rec.quality() == {"l1": round(l1, 4), "psnr_db": round(psnr, 3)}
