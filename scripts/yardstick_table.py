"""Summarise `centrifuge evaluate --json` files as the rows of docs/results.md's yardstick table.

    python scripts/yardstick_table.py runs/a-eval.json runs/b-eval.json --names "recipe A" "recipe B"

Each row: pairs, mean / median / worst model-to-identity loss ratio (the worst pair named), the pairs at or
above the identity, the mean matched-layer PSNR, the matched layers' gradient correlation (content: ~0,
tone: ~1) and the pairs where the model beats the tone oracle. A file written before `evaluate` reported the
oracle takes its per-pair figures from another file of the same call with the same clips, frames, size and blend
(plain, like a reflection, or tone-matched; moving or frozen: the oracle depends on the blend alone); "-" where
none has them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _pair_key(result: dict, pair: dict) -> tuple:
    return (tuple(pair.get("clips", ())), result.get("frames"), result.get("size"), bool(result.get("reflection")),
            bool(result.get("tone_match")), str(result.get("frozen") or ""))


def oracle_losses(results: list[dict]) -> dict[tuple, float]:
    """The tone oracle's loss of every pair that some result reports it for."""
    return {_pair_key(r, p): p["tone_oracle_loss"] for r in results for p in r["per_pair"] if "tone_oracle_loss" in p}


def beats_oracle(result: dict, oracle: dict[tuple, float]) -> str:
    losses = [oracle.get(_pair_key(result, p)) for p in result["per_pair"]]
    if not losses or None in losses:
        return "-"
    return str(sum(p["model_loss"] < o for p, o in zip(result["per_pair"], losses, strict=True)))


def row(name: str, result: dict, oracle: dict[tuple, float]) -> str:
    rows = result["per_pair"]
    worst = result["worst"]
    at_or_above = sum(1 for r in rows if r["ratio"] >= 1.0)
    clips = " + ".join(Path(c).stem for c in worst.get("clips", []))
    return (f"| {name} | {result['pairs']} | {result['ratio']:.3f} | {result['median_ratio']:.3f} | "
            f"{worst['ratio']:.3f} ({clips}) | {at_or_above} | {result['psnr_db']:.2f} dB | "
            f"{result['gradient_correlation']:.2f} | {beats_oracle(result, oracle)} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", type=Path)
    p.add_argument("--names", nargs="+")
    args = p.parse_args()
    names = args.names or [r.stem for r in args.results]
    if len(names) != len(args.results):
        print("error: give one --names entry per file", file=sys.stderr)
        return 2
    try:
        results = [json.loads(path.read_text()) for path in args.results]
    except (OSError, ValueError) as e:
        print(f"error: cannot read an evaluation file: {e}", file=sys.stderr)
        return 2
    oracle = oracle_losses(results)
    print("| model | pairs | mean ratio | median | worst pair | pairs >= identity | PSNR | gradient corr. "
          "| beats tone oracle |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, result in zip(names, results, strict=True):
        print(row(name, result, oracle))
    return 0


if __name__ == "__main__":
    sys.exit(main())
