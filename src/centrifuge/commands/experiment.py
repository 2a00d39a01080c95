"""``centrifuge experiment``: the paper's experiments (Sec. 4), each written up as a small report."""

from __future__ import annotations

import argparse

from ..config import list_presets
from ._common import add_shared_args


def add_command(sub: argparse._SubParsersAction) -> None:
    from ..experiments import EXPERIMENTS

    listing = "; ".join(f"{name}: {m.TITLE}" for name, m in EXPERIMENTS.items())
    p = sub.add_parser("experiment", help="run one of the paper's experiments (Sec. 4) and write a report",
                       description="Train (or load) the models an experiment needs on the training part of the data, "
                       "evaluate them on blends of held-out clips and write results.csv, results.md (next to the "
                       f"paper's numbers), results.json, pairs.csv and PNG figures into --out. Experiments: {listing}.")
    p.add_argument("name", choices=list(EXPERIMENTS), metavar="NAME", help=", ".join(EXPERIMENTS))
    p.add_argument("--data", required=True, help="folder of videos, or the Kinetics root with --kinetics-csv")
    p.add_argument("--kinetics-csv", action="append", default=[], metavar="CSV",
                   help="Kinetics CSV(s): rows of split train are trained on, rows of split val/validate evaluated "
                   "(repeat for train and validation CSVs)")
    p.add_argument("--out", "-o", required=True, help="folder for the report (and trained models under models/)")
    p.add_argument("--preset", default="cpu-tiny",
                   help=f"training preset ({', '.join(list_presets())}) or JSON file (default: cpu-tiny; "
                   "paper-112 is the paper's setting)")
    p.add_argument("--iterations", type=int, help="training iterations per model (default: the preset's)")
    add_shared_args(p, "model", model="use this model (file or run folder) as the experiment's standard model "
                    "instead of training it")
    p.add_argument("--frames", type=int, help="clip length T (default: the --model run's, else the preset's)")
    p.add_argument("--size", type=int, help="clip size H = W (default: the --model run's, else the preset's)")
    p.add_argument("--pairs", type=int, default=200, help="at most this many blends per table row (default 200)")
    p.add_argument("--windows", type=int, default=3, help="clips (evenly spaced windows) per video (default 3)")
    p.add_argument("--max-videos", type=int, default=32, help="evaluate at most this many videos (default 32)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="held-out fraction of a folder (default 0.2)")
    p.add_argument("--held-out", nargs="+", metavar="VIDEO", default=[],
                   help="hold out these videos (names or paths) instead of a seeded split")
    p.add_argument("--models-dir", help="where trained models live (default: OUT/models); experiments that share "
                   "it reuse each other's models when the settings match")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the pairs and training (default 0)")
    p.add_argument("--batch-size", type=int, default=8, help="blends per forward pass at evaluation (default 8)")
    add_shared_args(p, "device")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    p.add_argument("--progress", action="store_true", help="show training progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments import Settings, run_experiment

    settings = Settings(data=args.data, out=args.out, kinetics_csv=args.kinetics_csv, preset=args.preset,
                        iterations=args.iterations, model=args.model, frames=args.frames, size=args.size,
                        pairs=args.pairs, windows=args.windows, max_videos=args.max_videos, seed=args.seed,
                        val_fraction=args.val_fraction, held_out=args.held_out, models_dir=args.models_dir,
                        device=args.device, batch_size=args.batch_size, overwrite=args.overwrite,
                        progress=args.progress)
    report, written = run_experiment(args.name, settings)
    print((written["results.md"]).read_text().split("\n## Settings")[0].rstrip())
    print(f"\nwrote {', '.join(sorted(written))} in {args.out}")
    return 0
