"""``centrifuge demo``: the one-command tour (see ``centrifuge.demo``)."""

from __future__ import annotations

import argparse

from ._common import add_shared_args


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="blend two shipped clips, separate them, and separate a real clip",
                       description="Blend two short clips shipped with the package, separate the blend with the "
                       "default model (printing the identity-vs-model table), and separate one real clip filmed "
                       "through a car window. Writes previews, contact sheets and layers.json files.")
    p.add_argument("--out", "-o", default="centrifuge-demo", help="output folder (default: ./centrifuge-demo)")
    add_shared_args(p, "model")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty output folder")
    add_shared_args(p, "no_progress", no_progress="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import print_report, run_demo

    print_report(run_demo(args.out, args.model, overwrite=args.overwrite, progress=not args.no_progress))
    return 0
