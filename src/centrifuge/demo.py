"""``centrifuge demo``: blend two shipped clips, separate the blend, and separate one real clip.

Everything it needs ships with the package (three short BSD-licensed clips in ``centrifuge/assets`` and the
default model), so it runs offline on a fresh install.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .blend import blend
from .data import ClipSpec, sample_clip
from .errors import CentrifugeError
from .evaluate import evaluate_clips, format_table
from .frames import from_model, to_model
from .losses import pairwise_loss, pit_from_matrix
from .separate import separate
from .separation.previews import thumbnail, write_contact_sheet

BLEND_CLIPS = ("bikes.mp4", "office-window.mp4")
REAL_CLIP = "carphone.mp4"  # filmed from inside a car: scenery through (and reflected in) the window glass
FRAMES, SIZE = 32, 112


def asset(name: str) -> Path:
    """Path of a clip shipped in ``centrifuge/assets``."""
    return Path(str(resources.files("centrifuge").joinpath("assets", name)))


def _truth_sheet(path: Path, clips: torch.Tensor, mix: torch.Tensor, layers: torch.Tensor) -> None:
    """Contact sheet of the blend: blend | true A | true B | layer matched to A | layer matched to B."""
    frames = [from_model(mix), from_model(clips[0]), from_model(clips[1]),
              from_model(layers[0]), from_model(layers[1])]
    picks = np.linspace(0, mix.shape[1] - 1, 4).round().astype(int)
    rows = [(int(t), [thumbnail(f[t], 128) for f in frames]) for t in picks]
    write_contact_sheet(path, rows, ["blend", "clip A", "clip B", "layer ~A", "layer ~B"])


def blend_and_separate(paths: Sequence[str | Path], net: torch.nn.Module, out_dir: str | Path,
                       overwrite: bool = False, progress: bool = True, device: str = "auto",
                       on_progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, Any], dict[str, Path]]:
    """Blend two clips (``FRAMES`` frames at ``SIZE``), score the model against the known layers, and separate
    the blend with the product's own path (windows, stitching) into ``out_dir``. The figures are computed
    where ``net`` is; ``device`` is where :func:`separate` runs its prepared copy.

    Returns the identity-vs-model figures (:func:`centrifuge.evaluate.evaluate_clips`, plus ``separate_loss``:
    the PIT loss of :func:`separate`'s two layers) and the files written (``truth`` is the contact sheet of
    blend, true clips and matched layers).
    """
    spec = ClipSpec(frames=FRAMES, size=SIZE, train=False)
    clips = torch.stack([to_model(sample_clip(p, spec)) for p in paths])  # [2, 3, T, H, W]
    mix = blend(clips[0], clips[1], 0.5)
    figures = evaluate_clips(net, clips, [(0, 1)], device=next(net.parameters()).device)
    res = separate(from_model(mix), model=net, out_dir=out_dir, layers="best2", fps=25.0, device=device,
                   overwrite=overwrite, progress=progress, on_progress=on_progress)
    layers = to_model(res.layers)  # [2, 3, T, H, W]
    loss, assign = pit_from_matrix(pairwise_loss(layers[None], clips[None]))
    figures["separate_loss"] = float(loss[0])
    truth = Path(out_dir) / "truth.png"
    _truth_sheet(truth, clips, mix, layers[assign[0]])
    return figures, {**res.files, "truth": truth}


def fit_note(info: dict[str, Any], clips: Sequence[str | Path]) -> str:
    """A warning for figures of blends whose clips the model trained on (by file name, from the weights'
    ``trained_on``): they measure fit, not separation of new content. Empty when none was trained on."""
    seen = sorted(set(info.get("trained_on", ())) & {Path(c).name for c in clips})
    if not seen:
        return ""
    return (f"(the model was trained on {' and '.join(seen)}: these figures measure fit, not separation of new "
            "content; see the README's model card for unseen pairs)")


def run_demo(out_dir: str | Path, model: str | None = None, overwrite: bool = False,
             progress: bool = True) -> dict[str, Any]:
    """Run the demo into ``out_dir``; returns the figures and the files written."""
    from .checkpoint import load_model

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CentrifugeError(f"{out} exists and is not empty (pass --overwrite, or choose --out)")
    t0 = time.perf_counter()
    net, info = load_model(model)
    # 1. the blend: figures against the known layers, then the product's own path
    figures, blend_files = blend_and_separate([asset(name) for name in BLEND_CLIPS], net, out / "blend",
                                              overwrite=overwrite, progress=progress)
    # 2. a real, unblended video
    real = separate(asset(REAL_CLIP), model=net, out_dir=out / "real", layers="best2", overwrite=overwrite,
                    progress=progress)
    return {"figures": figures, "model": info["path"], "seconds": time.perf_counter() - t0,
            "fit_note": fit_note(info, BLEND_CLIPS), "real_tone": real.metadata["content_or_tone"],
            "blend_files": {k: str(v) for k, v in blend_files.items()},
            "real_files": {k: str(v) for k, v in real.files.items()}}


def print_report(report: dict[str, Any]) -> None:
    fig = report["figures"]
    print(format_table(fig, f"Blend of {BLEND_CLIPS[0]} and {BLEND_CLIPS[1]} ({FRAMES} frames, {SIZE}x{SIZE}), "
                            f"model {Path(report['model']).name}:"))
    print(f"| separate (windows, 2 most dissimilar layers) | PIT loss {fig['separate_loss']:.4f} |")
    if report["fit_note"]:
        print(report["fit_note"])
    for title, files in (("Blend", report["blend_files"]), (f"Real video {REAL_CLIP}", report["real_files"])):
        print(f"\n{title}:")
        for path in sorted(files.values()):
            print(f"  {path}")
    tone = report["real_tone"]
    print(f"  its two layers' gradient correlation: {tone['chosen_pair']:.2f} ({tone['split']}: different content "
          "scores about 0, tonal variants of one picture about 1)")
    print(f"done in {report['seconds']:.0f} s")
