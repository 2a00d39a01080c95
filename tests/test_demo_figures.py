"""The figures ``centrifuge demo`` prints and the page's *Blend* tab shows, with an oracle model that returns
the two true clips (in swapped order): loss 0 and the PSNR cap for the model, the identity's closed form for
the baseline, and a ``separate`` whose layers are the clips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import make_video
from torch import nn

import centrifuge.checkpoint
from centrifuge.data import ClipSpec, sample_clip
from centrifuge.demo import BLEND_CLIPS, FRAMES, SIZE, asset, print_report, run_demo
from centrifuge.frames import to_model
from centrifuge.jobs import Jobs, Limits, blend_job


class SwappedTruth(nn.Module):
    """Knows the two clips of the blend: for a blend of their shape it returns ``[B, A]``; for any other
    input (the demo's real clip) the input twice."""

    n_layers = 2

    def __init__(self, clips: torch.Tensor):
        super().__init__()
        self.truth = nn.Parameter(clips[[1, 0]].clone(), requires_grad=False)  # [2, 3, T, H, W]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != self.truth.shape[1:]:
            return torch.stack([x, x], dim=1)
        return self.truth[None].expand(x.shape[0], -1, -1, -1, -1, -1).to(x.dtype)


def _clips(paths) -> torch.Tensor:
    spec = ClipSpec(frames=FRAMES, size=SIZE, train=False)
    return torch.stack([to_model(sample_clip(p, spec)) for p in paths])


def _identity_closed_form(clips: torch.Tensor) -> tuple[float, float]:
    """Both outputs are (A + B) / 2: PIT loss = Eq. 3 of (A, B); each layer is off by (A - B) / 4 on [0, 1]."""
    d = clips[0].double().numpy() - clips[1].double().numpy()
    loss = 0.5 * (np.abs(d).mean() + np.abs(np.diff(d, axis=-1)).mean() + np.abs(np.diff(d, axis=-2)).mean())
    return float(loss), 10 * math.log10(1 / np.mean((d / 4) ** 2))


def _check(figures: dict, clips: torch.Tensor) -> None:
    loss, db = _identity_closed_form(clips)
    assert figures["identity_loss"] == pytest.approx(loss, rel=1e-5)
    assert figures["identity_psnr_db"] == pytest.approx(db, abs=1e-3)
    assert figures["model_loss"] == 0.0 and figures["ratio"] == 0.0
    assert figures["psnr_db"] == pytest.approx(100.0)
    # separate's two layers, written as 8-bit video frames and read back, are the clips (on the uint8 grid)
    assert figures["separate_loss"] < 1e-4
    assert figures["pairs"] == 1


def test_demo_figures_with_an_oracle(tmp_path, monkeypatch, capsys):
    clips = _clips([asset(name) for name in BLEND_CLIPS])
    oracle = SwappedTruth(clips)
    monkeypatch.setattr(centrifuge.checkpoint, "load_model", lambda *a, **k: (oracle, {"path": "oracle"}))
    report = run_demo(tmp_path / "demo", "oracle", progress=False)
    _check(report["figures"], clips)
    print_report(report)
    printed = capsys.readouterr().out
    loss, db = _identity_closed_form(clips)
    assert f"| identity (outputs = blend) | {loss:.4f} | {db:.2f} |" in printed
    assert "| model | 0.0000 | 100.00 |" in printed and "| model / identity | 0.000 |" in printed


def test_blend_job_figures_with_an_oracle(tmp_path, monkeypatch):
    paths = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    make_video(paths[0], frames=20, seed=1)  # shorter than 32 frames: looped, as the demo's clips would be
    make_video(paths[1], frames=36, seed=2, pattern="noise")
    clips = _clips(paths)
    monkeypatch.setattr(centrifuge.checkpoint, "load_model", lambda *a, **k: (SwappedTruth(clips), {"path": "o"}))
    folder, figures, files, info = blend_job(Jobs(tmp_path / "jobs"), paths, Limits(), model="o", device="cpu")
    _check(figures, clips)
    assert info["path"] == "o" and files["truth"].is_file()
