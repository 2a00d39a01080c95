"""Table 3: models trained on normal vs frozen clips, tested on frozen, normal and mixed pairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .clips import ClipSet, frozen_clips
from .context import Context
from .report import Report
from .scoring import mean, pair_records

NAME = "frozen"
TITLE = "Table 3: motion vs static cues (frozen videos)"
TESTS = ("2 frozen", "2 normal", "1 frozen 1 normal")
#: (trained on, test) -> validation loss of Table 3.
PAPER = {("frozen", "2 frozen"): 0.165, ("frozen", "2 normal"): 0.233, ("frozen", "1 frozen 1 normal"): 0.198,
         ("normal", "2 frozen"): 0.205, ("normal", "2 normal"): 0.133, ("normal", "1 frozen 1 normal"): 0.127}


def pairs_by_test(pairs: list[tuple[int, int]], n: int) -> dict[str, list[tuple[int, int]]]:
    """Pairs of each test into ``concat(normal clips, frozen clips)`` (frozen clip ``i`` is ``n + i``); the mixed
    test takes each pair both ways round, so every clip is seen frozen once."""
    return {"2 frozen": [(a + n, b + n) for a, b in pairs], "2 normal": list(pairs),
            "1 frozen 1 normal": [(a + n, b) for a, b in pairs] + [(a, b + n) for a, b in pairs]}


@dataclass
class NormalAndFrozen:
    """The clips followed by their frozen copies (frozen clip ``i`` is ``n + i``), and both trained models."""

    clips: ClipSet
    frames: np.ndarray
    models: dict[str, torch.nn.Module]

    @property
    def n(self) -> int:
        return len(self.clips)

    def name(self, i: int) -> str:
        return self.clips.name(i) if i < self.n else self.clips.name(i - self.n) + " (frozen)"


def normal_and_frozen(ctx: Context) -> NormalAndFrozen:
    """Train (or load) the model on normal and on frozen clips; the clip frames both ways."""
    cs = ctx.clips
    frozen_model = ctx.trained_model(ctx.base_model_cfg, frozen=True, label="trained on frozen clips")[0]
    models = {"normal": ctx.standard_model("trained on normal clips")[0], "frozen": frozen_model}
    return NormalAndFrozen(cs, np.concatenate([cs.frames, frozen_clips(cs.frames)]), models)


def run(ctx: Context) -> Report:
    """Train (or load) the normal and the frozen model and evaluate each on the three tests."""
    pairs, nf = ctx.pairs(), normal_and_frozen(ctx)
    frames, n, name, models = nf.frames, nf.n, nf.name, nf.models
    rows, pair_rows = [], []
    for trained_on in ("frozen", "normal"):
        for test, test_set in pairs_by_test(pairs, n).items():
            result = ctx.evaluate(models[trained_on], frames, test_set)
            rows.append({"train": trained_on, "test": test, "loss": mean([r["model_loss"] for r in result]),
                         "identity_loss": mean([r["identity_loss"] for r in result]), "pairs": len(test_set),
                         "paper": PAPER[(trained_on, test)]})
            pair_rows += pair_records(name, result, train=trained_on, test=test)
    loss = {(r["train"], r["test"]): r["loss"] for r in rows}

    def claim(text: str, ours: bool, paper: bool) -> str:
        return f"{text}: {'yes' if ours else 'no'} (paper: {'yes' if paper else 'no'})"

    notes = [
        claim("normal model: 2 frozen harder than 2 normal", loss["normal", "2 frozen"] > loss["normal", "2 normal"],
              PAPER["normal", "2 frozen"] > PAPER["normal", "2 normal"]),
        claim("on 2 frozen, the frozen model beats the normal model",
              loss["frozen", "2 frozen"] < loss["normal", "2 frozen"],
              PAPER["frozen", "2 frozen"] < PAPER["normal", "2 frozen"]),
        claim("normal model: 1 frozen 1 normal easier than 2 normal",
              loss["normal", "1 frozen 1 normal"] < loss["normal", "2 normal"],
              PAPER["normal", "1 frozen 1 normal"] < PAPER["normal", "2 normal"]),
        claim("on 2 normal, the frozen model is worse than the normal model",
              loss["frozen", "2 normal"] > loss["normal", "2 normal"],
              PAPER["frozen", "2 normal"] > PAPER["normal", "2 normal"]),
    ]
    table = ["Laid out as in the paper (rows: trained on; columns: tested on; ours / paper):", "",
             "| train / test | " + " | ".join(TESTS) + " |", "|---|---|---|---|"]
    for trained_on in ("frozen", "normal"):
        table.append(f"| 2 {trained_on} | " + " | ".join(
            f"{loss[trained_on, t]:.3f} / {PAPER[trained_on, t]}" for t in TESTS) + " |")
    return Report(TITLE, "Mean permutation-invariant loss (Eq. 2) on blended held-out pairs. A frozen clip is the "
                  "middle frame of a clip repeated over time; the frozen model trains on blends of frozen clips "
                  "(a random frame of each training clip).",
                  ["train", "test", "loss", "identity_loss", "pairs", "paper"], rows, pair_rows, notes,
                  extra="\n".join(table))
