"""Draw the held-out validation curves of training runs (``val/ratio`` of their TensorBoard logs) into a PNG.

    python scripts/plot_curves.py runs/a runs/b --names "recipe A" "recipe B" -o docs/img/curve.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from centrifuge.experiments.plots import line_chart

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]


def read_curve(run: Path, tag: str) -> list[tuple[float, float]]:
    """``(step, value)`` of ``tag`` in a run folder's TensorBoard logs (every events file under it)."""
    points: dict[int, float] = {}
    for events in sorted(run.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            points.update({e.step: e.value for e in acc.Scalars(tag)})  # a resumed run rewrites later steps
    return sorted(points.items())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--names", nargs="+", help="legend names (default: the run folders' names)")
    p.add_argument("--tag", default="val/ratio")
    p.add_argument("--title", default="held-out pairs: model / identity loss")
    p.add_argument("-o", "--out", type=Path, required=True)
    args = p.parse_args()
    names = args.names or [r.name for r in args.runs]
    if len(names) != len(args.runs):
        print("error: give one --names entry per run", file=sys.stderr)
        return 2
    series = {n: read_curve(r, args.tag) for n, r in zip(names, args.runs, strict=True)}
    img = line_chart(series, COLOURS, args.title, xlabel="iteration", ylabel=args.tag, reference=("identity", 1.0))
    tmp = args.out.with_suffix(".tmp.png")
    img.save(tmp)
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
