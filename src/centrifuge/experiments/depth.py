"""Table 4: encoder depth (I3D endpoint Mixed_3c / Mixed_4f / Mixed_5c) of the 2-layer predictor."""

from __future__ import annotations

from ..errors import CentrifugeError
from ..model import conv_depth
from .context import Context
from .report import Report
from .scoring import mean, pair_records

NAME = "depth"
TITLE = "Table 4: encoder depth"
#: endpoint -> (depth, validation loss) of Table 4.
PAPER = {"Mixed_3c": (7, 0.214), "Mixed_4f": (17, 0.181), "Mixed_5c": (21, 0.187)}


def run(ctx: Context) -> Report:
    """Train the 2-layer predictor with each encoder endpoint and evaluate on the same held-out pairs."""
    if ctx.model_path is not None:
        raise CentrifugeError("the depth experiment trains one model per row; --model does not apply")
    cs, pairs = ctx.clips, ctx.pairs()
    rows, pair_rows = [], []
    for endpoint, (paper_depth, paper_loss) in PAPER.items():
        cfg = ctx.model_config(n_layers=2, corrector=False, final_endpoint=endpoint)
        model, _ = ctx.trained_model(cfg, label=f"predictor, n = 2, {endpoint}")
        result = ctx.evaluate(model, cs.frames, pairs)
        rows.append({"endpoint": endpoint, "depth": conv_depth(model), "loss": mean([r["model_loss"] for r in result]),
                     "psnr_db": mean([r["psnr_db"] for r in result]), "pairs": len(pairs),
                     "paper_depth": paper_depth, "paper": paper_loss})
        pair_rows += pair_records(cs.name, result, endpoint=endpoint)
    best = min(rows, key=lambda r: r["loss"])
    shallow = rows[0]
    deeper_better = all(r["loss"] < shallow["loss"] for r in rows[1:])
    notes = [f"lowest loss: {best['endpoint']} (paper: Mixed_4f, with Mixed_5c close)",
             f"both deeper encoders beat Mixed_3c: {'yes' if deeper_better else 'no'} (paper: yes)"]
    return Report(TITLE, "Mean permutation-invariant loss (Eq. 2) on blended held-out pairs of a 2-layer predictor "
                  "whose encoder stops at each endpoint; depth = convolutions on the longest path of the encoder.",
                  ["endpoint", "depth", "loss", "psnr_db", "pairs", "paper_depth", "paper"], rows, pair_rows, notes)
