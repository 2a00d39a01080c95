"""Sec. 4.2: blends of two clips of the same source (same video, or same Kinetics class) vs random pairs."""

from __future__ import annotations

from .context import Context
from .report import Report
from .scoring import mean, pair_records

NAME = "same-source"
TITLE = "Sec. 4.2: same source vs random pairs"
#: The paper's losses (predictor-corrector, 4 layers): same class 0.145, random pairs 0.133.
PAPER = {"different": 0.133, "same-class": 0.145}
KINDS = {"different": "random pairs (two videos)", "same-video": "two windows of one video",
         "same-class": "two videos of one class"}


def run(ctx: Context) -> Report:
    """Evaluate the standard model on random pairs, same-video pairs and (with labels) same-class pairs."""
    cs = ctx.clips
    model, _ = ctx.standard_model()
    kinds = ["different", "same-video"]
    if any(cs.label(i) is not None for i in range(len(cs))):
        kinds.append("same-class")
    rows, pair_rows = [], []
    for kind in kinds:
        pairs = ctx.pairs(kind)
        result = ctx.evaluate(model, cs.frames, pairs)
        rows.append({"pairs_of": KINDS[kind], "loss": mean([r["model_loss"] for r in result]),
                     "identity_loss": mean([r["identity_loss"] for r in result]),
                     "psnr_db": mean([r["psnr_db"] for r in result]), "pairs": len(result),
                     "paper": PAPER.get(kind)})
        pair_rows += pair_records(cs.name, result, pairs_of=KINDS[kind])
    random_loss = rows[0]["loss"]
    notes = []
    for r in rows[1:]:
        if r["pairs"]:
            notes.append(f"{r['pairs_of']} vs random pairs: {r['loss']:.4f} vs {random_loss:.4f} "
                         f"({'harder' if r['loss'] > random_loss else 'easier'}; paper, same class: 0.145 vs 0.133, "
                         "harder)")
        else:
            notes.append(f"no pairs of {r['pairs_of']} (same-video pairs need --windows >= 2 and videos longer "
                         "than a clip)")
    return Report(TITLE, "Mean permutation-invariant loss (Eq. 2) of blends of two clips from the same source next "
                  "to random pairs of different videos; the identity loss shows how different the two clips are.",
                  ["pairs_of", "loss", "identity_loss", "psnr_db", "pairs", "paper"], rows, pair_rows, notes)
