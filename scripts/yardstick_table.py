"""Summarise `centrifuge evaluate --json` files as the rows of docs/results.md's yardstick table.

    python scripts/yardstick_table.py runs/a-eval.json runs/b-eval.json --names "recipe A" "recipe B"

Each row: pairs, mean / median / worst model-to-identity loss ratio (the worst pair named), the pairs at or
above the identity, the mean matched-layer PSNR and the matched layers' gradient correlation (content: ~0,
tone: ~1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def row(name: str, result: dict) -> str:
    rows = result["per_pair"]
    worst = result["worst"]
    at_or_above = sum(1 for r in rows if r["ratio"] >= 1.0)
    clips = " + ".join(Path(c).stem for c in worst.get("clips", []))
    return (f"| {name} | {result['pairs']} | {result['ratio']:.3f} | {result['median_ratio']:.3f} | "
            f"{worst['ratio']:.3f} ({clips}) | {at_or_above} | {result['psnr_db']:.2f} dB | "
            f"{result['gradient_correlation']:.2f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", type=Path)
    p.add_argument("--names", nargs="+")
    args = p.parse_args()
    names = args.names or [r.stem for r in args.results]
    if len(names) != len(args.results):
        print("error: give one --names entry per file", file=sys.stderr)
        return 2
    print("| model | pairs | mean ratio | median | worst pair | pairs >= identity | PSNR | gradient corr. |")
    print("|---|---|---|---|---|---|---|---|")
    for name, path in zip(names, args.results, strict=True):
        print(row(name, json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
