"""Sec. 4.2: correlation between a pair's unmixing loss and the distance between the two clips' features."""

from __future__ import annotations

import torch

from .context import Context
from .report import Report
from .scoring import encoder_features, encoder_of, pair_records, pearson

NAME = "feature-distance"
TITLE = "Sec. 4.2: loss vs low- and high-level feature distance"
LOW = "Conv3d_2c_3x3"
#: Pearson r between loss and feature distance in the paper (features of a supervised Kinetics I3D).
PAPER = {"low": 0.14, "high": -0.23}


def run(ctx: Context) -> Report:
    """Per pair: the model's loss and the Euclidean distances between averaged low/high-level features."""
    cs, pairs = ctx.clips, ctx.pairs()
    model, _ = ctx.standard_model()
    high = encoder_of(model).final_endpoint
    feats = encoder_features(model, cs.frames, [LOW, high], ctx.s.batch_size, ctx.device)
    result = ctx.evaluate(model, cs.frames, pairs)
    pair_rows = pair_records(cs.name, result)
    for p, r in zip(pair_rows, result, strict=True):
        a, b = r["a"], r["b"]
        p["low_distance"] = torch.dist(feats[LOW][a], feats[LOW][b]).item()
        p["high_distance"] = torch.dist(feats[high][a], feats[high][b]).item()
        p["ratio"] = p["loss"] / p["identity_loss"]
    losses = [p["loss"] for p in pair_rows]
    ratios = [p["ratio"] for p in pair_rows]
    rows = []
    for level, endpoint in (("low", LOW), ("high", high)):
        d = [p[f"{level}_distance"] for p in pair_rows]
        rows.append({"features": f"{level}-level ({endpoint}, averaged)", "pearson_r": pearson(losses, d),
                     "pearson_r_ratio": pearson(ratios, d), "pairs": len(pair_rows), "paper": PAPER[level]})
    low_r, high_r = rows[0]["pearson_r"], rows[1]["pearson_r"]
    notes = [f"sign of r, low-level: {'+' if low_r > 0 else '-'} (paper: +0.14); high-level: "
             f"{'+' if high_r > 0 else '-'} (paper: -0.23)",
             f"high-level r below low-level r: {'yes' if high_r < low_r else 'no'} (paper: yes)"]
    return Report(TITLE, "Pearson correlation, over blended held-out pairs, between the model's loss (Eq. 2) and the "
                  "Euclidean distance between the two clips' averaged encoder features; pearson_r_ratio uses the "
                  "loss divided by the identity loss instead. The paper used a supervised Kinetics I3D classifier "
                  "for the features; none is available here, so the features come from the centrifuge model's own "
                  "(blend-trained) encoder.",
                  ["features", "pearson_r", "pearson_r_ratio", "pairs", "paper"], rows, pair_rows, notes)
