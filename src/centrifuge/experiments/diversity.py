"""Fig. 6 / Sec. 4.2: diversity of the output layers, min over i != j of l(O_i, O_j), normal vs frozen."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..frames import from_model
from ..losses import diversity
from . import plots
from .context import Context
from .frozen import normal_and_frozen, pairs_by_test
from .report import Report
from .scoring import iter_outputs, mean

NAME = "diversity"
TITLE = "Fig. 6: diversity of the output layers"
#: (trained on, test) -> the paper's average diversity over 1K blends (Sec. 4.2).
PAPER = {("frozen", "2 frozen"): 0.079, ("normal", "2 normal"): 0.045}
#: The scores printed next to the paper's most diverse examples (Fig. 6), least diverse first.
PAPER_EXAMPLES = {"frozen": (0.220, 0.225, 0.228, 0.262), "normal": (0.158, 0.178)}
EXAMPLES = 3


def scores(ctx: Context, model: torch.nn.Module, frames: np.ndarray,
           pairs: list[tuple[int, int]]) -> list[tuple[tuple[int, int], float]]:
    """Diversity score of the model's output layers on each blended pair."""
    out = []
    for chunk, _mix, layers in iter_outputs(model, frames, pairs, ctx.s.batch_size, ctx.device):
        out += list(zip(chunk, diversity(layers).tolist(), strict=True))
    return out


def run(ctx: Context) -> Report:
    """Score every blend of the standard and the frozen-trained model on normal and frozen pairs."""
    pairs, nf = ctx.pairs(), normal_and_frozen(ctx)
    frames, n, name, models = nf.frames, nf.n, nf.name, nf.models
    tests = {k: v for k, v in pairs_by_test(pairs, n).items() if k in ("2 normal", "2 frozen")}
    rows, pair_rows, found = [], [], {}
    for trained_on in ("normal", "frozen"):
        for test, test_set in tests.items():
            got = scores(ctx, models[trained_on], frames, test_set)
            found[trained_on, test] = got
            values = [v for _, v in got]
            rows.append({"train": trained_on, "test": test, "mean_diversity": mean(values),
                         "max_diversity": max(values), "pairs": len(values),
                         "paper": PAPER.get((trained_on, test))})
            pair_rows += [{"train": trained_on, "test": test, "a": name(a), "b": name(b), "diversity": v}
                          for (a, b), v in got]
    by = {(r["train"], r["test"]): r for r in rows}
    ff, nn = by["frozen", "2 frozen"]["mean_diversity"], by["normal", "2 normal"]["mean_diversity"]
    top = max(rows, key=lambda r: r["max_diversity"])
    examples = "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in PAPER_EXAMPLES.items())
    notes = [f"frozen model on frozen blends vs normal model on normal blends: {ff:.4f} vs {nn:.4f} "
             f"({'more' if ff > nn else 'less'} diverse; paper: 0.079 vs 0.045, more diverse)",
             f"most diverse blend: {top['train']} model on {top['test']} blends ({top['max_diversity']:.4f}; "
             f"the paper's Fig. 6 examples: {examples})"]
    strip = _strip(ctx, models, frames, found, name)
    return Report(TITLE, "Diversity score min_{i != j} l(O_i, O_j) (Eq. 3 between output layers) of the model's "
                  "layers on blended held-out pairs, averaged; higher means the layers differ more. The figure "
                  "shows the most diverse blends (middle frame), least diverse first as in the paper.",
                  ["train", "test", "mean_diversity", "max_diversity", "pairs", "paper"], rows, pair_rows, notes,
                  {"diversity.png": strip})


def _strip(ctx: Context, models: dict[str, torch.nn.Module], frames: np.ndarray,
           found: dict[tuple[str, str], list[tuple[tuple[int, int], float]]], name) -> Image.Image:
    """Blend | layers for the most diverse examples of frozen-on-frozen and normal-on-normal (Fig. 6)."""
    t = ctx.frames // 2
    rows = []
    for trained_on, test in (("frozen", "2 frozen"), ("normal", "2 normal")):
        top = sorted(found[trained_on, test], key=lambda x: x[1])[-EXAMPLES:]
        for _chunk, mix, out in iter_outputs(models[trained_on], frames, [p for p, _ in top], len(top), ctx.device):
            for b, ((a, bb), score) in enumerate(top):
                images = [from_model(mix[b, :, t:t + 1])[0]] + [from_model(out[b, k, :, t:t + 1])[0]
                                                              for k in range(out.shape[1])]
                a_name, b_name = (name(i).removesuffix(" (frozen)") for i in (a, bb))
                rows.append((f"{trained_on} model, {test}\n{a_name}\n+ {b_name}\nscore {score:.3f}", images))
    n_layers = max(len(images) for _, images in rows) - 1
    return plots.image_rows(rows, ["blend"] + [f"layer {k + 1}" for k in range(n_layers)], cell=80, label_width=210)
