"""Fig. 4: separating held-out clips from plain colour videos (colour constancy)."""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image

from ..frames import from_model
from . import plots
from .context import Context
from .report import Report
from .scoring import iter_outputs, mean, pair_records

NAME = "colors"
TITLE = "Fig. 4: blends with plain colour videos"
#: The paper's filters (Sec. 4.2), as 8-bit RGB.
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0), "white": (255, 255, 255), "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
    "yellow": (255, 255, 0), "cyan": (0, 255, 255), "magenta": (255, 0, 255)}
REAL = "real pairs"


def colour_clips(frames: int, size: int) -> np.ndarray:
    """One constant clip per colour of :data:`COLOURS`: ``uint8 [8, frames, size, size, 3]``."""
    rgb = np.array(list(COLOURS.values()), dtype=np.uint8)
    return np.ascontiguousarray(np.broadcast_to(rgb[:, None, None, None, :], (len(rgb), frames, size, size, 3)))


def run(ctx: Context) -> Report:
    """Blend every held-out clip with every colour, and compare with blends of two real clips."""
    cs = ctx.clips
    n = len(cs)
    frames = np.concatenate([cs.frames, colour_clips(ctx.frames, ctx.size)])
    held = [i for i in range(n) if cs.held_out(i)]
    if len(held) > ctx.s.pairs:
        held = sorted(random.Random(f"experiment-colours:{ctx.s.seed}").sample(held, ctx.s.pairs))
    model, _ = ctx.standard_model()
    names = list(COLOURS)

    def name(i: int) -> str:
        return cs.name(i) if i < n else names[i - n]

    rows, pair_rows = [], []
    for c, colour in enumerate(names):
        result = ctx.evaluate(model, frames, [(i, n + c) for i in held])
        rows.append({"blend": f"clip + {colour}", "loss": mean([r["model_loss"] for r in result]),
                     "identity_loss": mean([r["identity_loss"] for r in result]),
                     "psnr_db": mean([r["psnr_db"] for r in result]), "pairs": len(result)})
        pair_rows += pair_records(name, result, blend=rows[-1]["blend"])
    real_pairs = ctx.pairs()
    result = ctx.evaluate(model, frames, real_pairs)
    rows.append({"blend": REAL, "loss": mean([r["model_loss"] for r in result]),
                 "identity_loss": mean([r["identity_loss"] for r in result]),
                 "psnr_db": mean([r["psnr_db"] for r in result]), "pairs": len(result)})
    pair_rows += pair_records(name, result, blend=REAL)

    colour_rows = rows[:-1]
    easiest = min(colour_rows, key=lambda r: r["loss"])
    hardest = max(colour_rows, key=lambda r: r["loss"])
    easier = [r["blend"].removeprefix("clip + ") for r in colour_rows if r["loss"] < rows[-1]["loss"]]
    notes = [f"easiest colour: {easiest['blend'].removeprefix('clip + ')} (paper: black and white)",
             f"hardest colour: {hardest['blend'].removeprefix('clip + ')} (paper: magenta and green)",
             f"colours easier to separate than two real clips ({rows[-1]['loss']:.4f}): "
             f"{', '.join(easier) or 'none'} ({len(easier)} of {len(colour_rows)}; paper: most of them)"]
    chart = plots.bar_chart([*names, "real"], [r["loss"] for r in rows],
                            [*COLOURS.values(), plots.GREY], "Loss separating a clip from a plain colour video",
                            ylabel="PIT loss (Eq. 2)")
    figures = {"colors.png": chart}
    if held:
        # the most textured held-out clip shows best what stays of it in each layer
        clip = max(held, key=lambda i: float(cs.frames[i].std(axis=(1, 2)).mean()))
        figures["colors-example.png"] = _example(ctx, model, frames, clip, n, names)
    return Report(TITLE, "Mean permutation-invariant loss (Eq. 2) of blends (alpha = 0.5) of a held-out clip with a "
                  "constant-colour clip, next to blends of two real clips; lower is better. The paper gives this "
                  "as a bar chart (Fig. 4) without numbers.", ["blend", "loss", "identity_loss", "psnr_db", "pairs"],
                  rows, pair_rows, notes, figures)


def _example(ctx: Context, model: torch.nn.Module, frames: np.ndarray, clip: int, n: int,
             names: list[str]) -> Image.Image:
    """Fig. 5-like strip: middle frame of one clip blended with each colour, and the output layers."""
    t = ctx.frames // 2
    rows = []
    for _chunk, mix, out in iter_outputs(model, frames, [(clip, n + c) for c in range(len(names))],
                                         ctx.s.batch_size, ctx.device):
        for b in range(len(mix)):
            images = [from_model(mix[b, :, t:t + 1])[0]] + [from_model(out[b, k, :, t:t + 1])[0]
                                                          for k in range(out.shape[1])]
            rows.append((f"+ {names[len(rows)]}", images))
    header = ["blend"] + [f"layer {k + 1}" for k in range(len(rows[0][1]) - 1)]
    rows.insert(0, (f"clip {ctx.clips.name(clip)}", [frames[clip, t]]))
    return plots.image_rows(rows, header, cell=80, label_width=190)
