"""Table 1: the identity baseline, the untrained predictor and the trained 2-layer predictor."""

from __future__ import annotations

from ..model import ModelConfig
from .context import Context
from .report import Report
from .scoring import mean, pair_records

NAME = "baselines"
TITLE = "Table 1: baselines"
#: Validation losses of Table 1.
PAPER = {"identity": 0.361, "untrained": 0.561, "trained": 0.187}


def run(ctx: Context) -> Report:
    """Evaluate the three rows of Table 1 on the same held-out pairs."""
    cs, pairs = ctx.clips, ctx.pairs()
    if ctx.model_path is not None:
        trained, record = ctx.standard_model("predictor (trained, --model)")
        cfg = ModelConfig.from_dict(record.config)
    else:
        cfg = ctx.model_config(n_layers=2, corrector=False)
        trained, record = ctx.trained_model(cfg, label="predictor (trained)")
    untrained, _ = ctx.untrained_model(cfg, "predictor (no training)")
    on_trained = ctx.evaluate(trained, cs.frames, pairs)
    on_untrained = ctx.evaluate(untrained, cs.frames, pairs)
    kind = f"{'predictor-corrector' if cfg.corrector else 'predictor'}, {cfg.n_layers} layers"
    rows = [
        {"model": "identity", "loss": mean([r["identity_loss"] for r in on_trained]),
         "psnr_db": mean([r["identity_psnr_db"] for r in on_trained]), "pairs": len(pairs),
         "paper": PAPER["identity"]},
        {"model": f"untrained ({kind})", "loss": mean([r["model_loss"] for r in on_untrained]),
         "psnr_db": mean([r["psnr_db"] for r in on_untrained]), "pairs": len(pairs), "paper": PAPER["untrained"]},
        {"model": f"trained ({kind})", "loss": mean([r["model_loss"] for r in on_trained]),
         "psnr_db": mean([r["psnr_db"] for r in on_trained]), "pairs": len(pairs), "paper": PAPER["trained"]},
    ]
    pair_rows = pair_records(cs.name, on_trained, identity=True, model="identity")
    pair_rows += pair_records(cs.name, on_untrained, model=rows[1]["model"])
    pair_rows += pair_records(cs.name, on_trained, model=rows[2]["model"])
    best = min(rows, key=lambda r: r["loss"])
    worst = max(rows, key=lambda r: r["loss"])
    notes = [f"lowest loss: {best['model']} (paper: the trained predictor)",
             f"highest loss: {worst['model']} (paper: the untrained predictor)",
             f"trained / identity = {rows[2]['loss'] / rows[0]['loss']:.3f} "
             f"(paper: {PAPER['trained'] / PAPER['identity']:.3f})"]
    return Report(TITLE, "Mean permutation-invariant loss (Eq. 2) of blended held-out pairs (alpha = 0.5), lower "
                  "is better; PSNR of the matched output layers.",
                  ["model", "loss", "psnr_db", "pairs", "paper"], rows, pair_rows, notes)
