"""Table 2: number of output layers n, predictor vs predictor-corrector."""

from __future__ import annotations

from ..errors import CentrifugeError
from .context import Context
from .report import Report
from .scoring import mean, pair_records

NAME = "layers"
TITLE = "Table 2: number of output layers"
#: (architecture, n) -> validation loss of Table 2.
PAPER = {("predictor", 2): 0.187, ("predictor", 4): 0.159, ("predictor", 8): 0.151, ("predictor", 12): 0.150,
         ("predictor-corrector", 2): 0.172, ("predictor-corrector", 4): 0.133}
VARIANTS = (("predictor", 2), ("predictor", 4), ("predictor", 8), ("predictor", 12),
            ("predictor-corrector", 2), ("predictor-corrector", 4))


def _row(rows: list[dict], arch: str, n: int) -> dict:
    return next(r for r in rows if r["architecture"] == arch and r["layers"] == n)


def run(ctx: Context) -> Report:
    """Train the six models of Table 2 and evaluate them on the same held-out pairs."""
    if ctx.model_path is not None:
        raise CentrifugeError("the layers experiment trains one model per row; --model does not apply")
    cs, pairs = ctx.clips, ctx.pairs()
    rows, pair_rows = [], []
    for arch, n in VARIANTS:
        cfg = ctx.model_config(n_layers=n, corrector=arch == "predictor-corrector")
        model, _ = ctx.trained_model(cfg, label=f"{arch}, n = {n}")
        result = ctx.evaluate(model, cs.frames, pairs)
        rows.append({"architecture": arch, "layers": n, "loss": mean([r["model_loss"] for r in result]),
                     "psnr_db": mean([r["psnr_db"] for r in result]), "pairs": len(pairs), "paper": PAPER[(arch, n)]})
        pair_rows += pair_records(cs.name, result, architecture=arch, layers=n)
    p = [_row(rows, "predictor", n)["loss"] for n in (2, 4, 8, 12)]
    best = min(rows, key=lambda r: r["loss"])
    notes = [
        f"lowest loss: {best['architecture']}, n = {best['layers']} (paper: predictor-corrector, n = 4)",
        f"predictor, n = 4 vs n = 2: {p[1]:.4f} vs {p[0]:.4f} "
        f"({'more layers help' if p[1] < p[0] else 'more layers do not help'}; paper: 0.159 vs 0.187)",
        f"predictor, n = 12 vs n = 2: {p[3]:.4f} vs {p[0]:.4f} (paper: 0.150 vs 0.187)",
    ]
    for n in (2, 4):
        pc, pr = _row(rows, "predictor-corrector", n)["loss"], _row(rows, "predictor", n)["loss"]
        notes.append(f"n = {n}: predictor-corrector {pc:.4f} vs predictor {pr:.4f} "
                     f"({'corrector helps' if pc < pr else 'corrector does not help'}; paper: "
                     f"{PAPER[('predictor-corrector', n)]} vs {PAPER[('predictor', n)]})")
    table = ["Laid out as in the paper (ours / paper):", "", "| n | predictor | predictor-corrector |", "|---|---|---|"]
    for n in (2, 4, 8, 12):
        pc = (f"{_row(rows, 'predictor-corrector', n)['loss']:.3f} / {PAPER[('predictor-corrector', n)]}"
              if n in (2, 4) else "- / -")
        table.append(f"| {n} | {_row(rows, 'predictor', n)['loss']:.3f} / {PAPER[('predictor', n)]} | {pc} |")
    return Report(TITLE, "Mean permutation-invariant loss (Eq. 2) on blended held-out pairs for n output layers "
                  "(the best-matching 2 of the n layers are scored), lower is better.",
                  ["architecture", "layers", "loss", "psnr_db", "pairs", "paper"], rows, pair_rows, notes,
                  extra="\n".join(table))
