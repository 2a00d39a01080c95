"""Mutation check of the reported figures: change the code behind one figure at a time (PSNR, the PIT
assignment, the matched layers, the most dissimilar pair, the FLOP count, the packaged weights, ...), run only
the tests of that figure, and report whether they fail (the mutant is "killed") as they should.

Usage: python scripts/mutation_check.py [--only NAME ...] [--list]

Every mutant is applied to a temporary copy of ``src/``, ``tests/`` and ``scripts/``: the working tree is
never changed, and the copy is restored after each mutant and removed at the end. A mutant names its code by
an exact snippet, found in whichever file under ``src/centrifuge`` (or ``scripts``) holds it exactly once, so
a function that moves to another module is still found; a snippet found nowhere (or twice) is reported as
"not applied" and counts as a failure of this check. Exit status: 0 when every mutant was applied and killed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("src", "tests", "scripts", "pyproject.toml")


@dataclass
class Mutant:
    name: str
    tests: tuple[str, ...]  # test files or node ids, relative to the repository root
    old: str = ""  # an exact snippet of code ...
    new: str = ""  # ... and what it becomes
    where: str = "src/centrifuge"  # searched recursively for the one file holding ``old``
    apply: Callable[[Path], None] | None = None  # instead of a snippet: change the copy some other way


FIGURES = ("tests/test_figures.py",)
SEPARATE = ("tests/test_separate_figures.py",)
COUNTS = ("tests/test_counts.py",)
PACKAGED = ("tests/test_packaged_model.py",)
DEMO = ("tests/test_demo_figures.py",)


def _packaged_weights(change: str) -> Callable[[Path], None]:
    """Replace the copy's packaged model by one of the same architecture and metadata, ``change``d."""
    def apply(copy: Path) -> None:
        code = f"""
import torch
from centrifuge.checkpoint import load_model, read_model_info, save_weights
from centrifuge.model import build_model
cfg, info, path = read_model_info(None)
torch.manual_seed(0)
if {change!r} == "untrained":
    model = build_model(cfg)
else:
    model, _ = load_model(None)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.reset_running_stats()
save_weights(path, model, cfg, info)
"""
        _python(copy, ["-c", code])
    return apply


MUTANTS = [
    # PSNR: losses.psnr (evaluate, demo, the page's blend table)
    Mutant("psnr: -20 log10(MSE)", FIGURES + ("tests/test_losses.py",),
           "return -10 * torch.log10(mse.clamp_min(1e-10))", "return -20 * torch.log10(mse.clamp_min(1e-10))"),
    Mutant("psnr: of the mean absolute error", FIGURES,
           "psnr_from_mse((((a - b) / 2).clamp(-1, 1) ** 2).mean(",
           "psnr_from_mse((((a - b) / 2).clamp(-1, 1).abs()).mean("),
    Mutant("psnr: peak 2 (pixels not mapped to [0, 1])", FIGURES,
           "psnr_from_mse((((a - b) / 2).clamp(-1, 1) ** 2)", "psnr_from_mse((((a - b) / 1).clamp(-1, 1) ** 2)"),
    # PSNR of layers.json (separate's recomposition figures: separation/stats.quality, through losses.psnr_from_mse)
    Mutant("layers.json psnr: always 100 dB", SEPARATE,
           "psnr = float(psnr_from_mse(torch.tensor(mse / 255.0**2, dtype=torch.float64)))", "psnr = 100.0"),
    Mutant("layers.json psnr: of the L1 error", SEPARATE,
           "psnr = float(psnr_from_mse(torch.tensor(mse / 255.0**2,",
           "psnr = float(psnr_from_mse(torch.tensor(l1 / 255.0,"),
    # the PIT assignment: losses.pit_from_matrix
    Mutant("pit: the worst assignment", FIGURES + ("tests/test_losses.py",),
           "loss, best = totals.min(dim=1)", "loss, best = totals.max(dim=1)"),
    Mutant("pit: the minimum's loss, slots in order", FIGURES,
           "return loss, perms[best]", "return loss, perms[torch.zeros_like(best)]"),
    # the matched-layer choice for PSNR: evaluate.evaluate_clips
    Mutant("matched layers: the first two slots", FIGURES + DEMO,
           "matched = torch.gather(out, 1, assign[:, :, None, None, None, None].expand_as(targets))",
           "matched = out[:, :2]"),
    Mutant("identity baseline: a blend at alpha 0.25", FIGURES + DEMO,
           "mix = blend(targets[:, 0], targets[:, 1], alpha)", "mix = blend(targets[:, 0], targets[:, 1], 0.25)"),
    # the most dissimilar pair: losses.farthest_pair, behind losses.most_dissimilar_pair ...
    Mutant("most dissimilar (losses): the most similar pair", FIGURES + ("tests/test_losses.py",),
           'flat = distances.masked_fill(~upper, float("-inf")).flatten(1).argmax(dim=1)',
           'flat = distances.masked_fill(~upper, float("inf")).flatten(1).argmin(dim=1)'),
    Mutant("most dissimilar (losses): always the first pair", FIGURES + ("tests/test_losses.py",),
           'flat = distances.masked_fill(~upper, float("-inf")).flatten(1).argmax(dim=1)',
           'flat = torch.ones(distances.shape[0], dtype=torch.long)'),
    # ... and behind separate's choice on its accumulated distances (separation/stats.most_dissimilar)
    Mutant("most dissimilar (separate): the most similar pair", SEPARATE,
           'flat = distances.masked_fill(~upper, float("-inf")).flatten(1).argmax(dim=1)',
           'flat = distances.masked_fill(~upper, float("inf")).flatten(1).argmin(dim=1)'),
    Mutant("most dissimilar (separate): distances of one direction only", SEPARATE + ("tests/test_losses.py",),
           "return upper + upper.T", "return upper"),
    # FLOP counts: perf.count_flops and bench
    Mutant("flops: multiply-adds instead of FLOPs", COUNTS,
           "return int(counter.get_total_flops())", "return int(counter.get_total_flops()) // 2"),
    Mutant("bench: inference FLOPs not divided by the batch", COUNTS,
           '"gflop_per_clip": flops / s.batch / 1e9,', '"gflop_per_clip": flops / 1e9,'),
    Mutant("bench: seconds per batch, not per clip", COUNTS,
           "seconds = _median(times) / s.batch", "seconds = _median(times)"),
    Mutant("bench: training FLOPs not divided by the batch", COUNTS,
           '"gflop_per_clip": flops / batch / 1e9,', '"gflop_per_clip": flops / 1e9,'),
    Mutant("bench: forward only in the training count", COUNTS,
           "flops = count_flops(meta, torch.zeros(batch, 3, s.frames, s.size, s.size, device=\"meta\"), backward=True)",
           "flops = count_flops(meta, torch.zeros(batch, 3, s.frames, s.size, s.size, device=\"meta\"))"),
    # the packaged model
    Mutant("packaged weights: untrained, same architecture", PACKAGED, apply=_packaged_weights("untrained")),
    Mutant("packaged weights: BatchNorm statistics reset", PACKAGED, apply=_packaged_weights("bn-reset")),
    # the packaged model's provenance
    Mutant("export script: preset always cpu-small", ("tests/test_export_script.py",),
           '"preset": run_preset(cfg, train)', '"preset": "cpu-small"', where="scripts"),
]


def _env(copy: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(copy / "src"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def _python(copy: Path, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=copy, env=_env(copy), capture_output=True, text=True,
                          check=True)


def _holder(copy: Path, where: str, snippet: str) -> Path | None:
    """The one file under ``copy/where`` that holds ``snippet`` exactly once (None if not exactly one)."""
    found = [(p, p.read_text().count(snippet)) for p in sorted((copy / where).rglob("*.py"))
             if p.name != Path(__file__).name]  # this file quotes every snippet
    found = [(p, n) for p, n in found if n]
    return found[0][0] if len(found) == 1 and found[0][1] == 1 else None


def run_mutant(m: Mutant, copy: Path) -> tuple[str, str]:
    """``(outcome, detail)``: ``killed``, ``SURVIVED`` or ``NOT APPLIED``; the copy is restored afterwards."""
    saved: dict[Path, bytes] = {}
    try:
        if m.apply is not None:
            weights = copy / "src/centrifuge/weights/default.safetensors"
            saved[weights] = weights.read_bytes()
            m.apply(copy)
            detail = "weights replaced"
        else:
            path = _holder(copy, m.where, m.old)
            if path is None:
                return "NOT APPLIED", f"snippet not found exactly once under {m.where}: {m.old!r}"
            saved[path] = path.read_bytes()
            path.write_text(saved[path].decode().replace(m.old, m.new))
            detail = str(path.relative_to(copy))
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *m.tests],
                              cwd=copy, env=_env(copy), capture_output=True, text=True)
        failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        if proc.returncode == 0:
            return "SURVIVED", detail
        return "killed", f"{detail}; {failed[0] if failed else proc.stdout.strip().splitlines()[-1]}"
    finally:
        for path, data in saved.items():
            path.write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=[], help="run the mutants whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or any(s in m.name for s in args.only)]
    if args.list:
        print("\n".join(f"{m.name}: {' '.join(m.tests)}" for m in chosen))
        return 0
    bad = 0
    with tempfile.TemporaryDirectory(prefix="mutation-check-") as tmp:
        copy = Path(tmp)
        for name in COPIED:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                shutil.copy2(src, copy / name)
        where = _python(copy, ["-c", "import centrifuge; print(centrifuge.__file__)"]).stdout.strip()
        if not Path(where).is_relative_to(copy):  # the mutants would change code the tests never import
            print(f"the copy's tests would import {where}, not the copy")
            return 1
        baseline = sorted({t for m in chosen for t in m.tests})
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *baseline], cwd=copy,
                              env=_env(copy), capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"the unchanged code fails its tests; nothing to compare against:\n{proc.stdout[-3000:]}")
            return 1
        print(f"unchanged code: {' '.join(baseline)} pass")
        for m in chosen:
            start = time.perf_counter()
            outcome, detail = run_mutant(m, copy)
            bad += outcome != "killed"
            print(f"{outcome:>11}  {m.name}  ({time.perf_counter() - start:.0f} s; {detail})", flush=True)
    print(f"{len(chosen) - bad} of {len(chosen)} mutants killed")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
