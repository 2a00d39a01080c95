"""``centrifuge prepare``: a low-resolution copy of a video dataset that decodes fast (see ``centrifuge.cache``)."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import CentrifugeError
from ._common import add_shared_args


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="transcode a video folder or Kinetics to a fast low-resolution cache",
                       description="Transcode every video of SRC (a folder, or the clips of a Kinetics CSV under "
                       "it) to H.264 with the shortest side at --size, keeping relative paths, file names and "
                       "frame rates, and write manifest.csv. Resumable: finished files are skipped. Videos that "
                       "fail are listed in failures.csv and retried on the next run. Train on the result by "
                       "giving the cache folder to `centrifuge train` (with the same --kinetics-csv).")
    p.add_argument("src", metavar="SRC", help="video folder, a video, or the Kinetics root folder")
    p.add_argument("--out", "-o", required=True, metavar="CACHE_DIR", help="cache folder (created)")
    p.add_argument("--size", type=int, default=128,
                   help="shortest side, even (default 128: training at 112 crops from 1.15 x 112 = 129)")
    p.add_argument("--kinetics-csv", help="official Kinetics CSV: only its clips, with labels")
    p.add_argument("--kinetics-split", help="only rows of this split (default: all)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes (default: all CPUs)")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality, lower is better (default 18)")
    p.add_argument("--gop", type=int, default=32, help="keyframe interval in frames (default 32)")
    add_shared_args(p, "no_progress")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cache import FAILURES, prepare_cache
    from ..video import check_video

    if args.workers < 0:
        raise CentrifugeError("--workers must be >= 0")
    if args.gop < 1 or not 0 <= args.crf <= 51:
        raise CentrifugeError("--gop must be >= 1 and --crf in 0..51")
    if args.size < 2 or args.size % 2:
        raise CentrifugeError(f"--size must be even (H.264 needs even frame sizes), got {args.size}")
    if os.path.isfile(args.src) and not args.kinetics_csv:
        check_video(args.src)  # one file named: refused before the cache folder is made
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(unit="video", dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    try:
        result = prepare_cache(args.src, args.out, size=args.size, kinetics_csv=args.kinetics_csv,
                               split=args.kinetics_split, workers=args.workers, crf=args.crf, gop=args.gop,
                               progress=progress)
    finally:
        if bar is not None:
            bar.close()
    print(f"{result.total} videos: {result.transcoded} transcoded, {result.skipped} already done, "
          f"{len(result.failed)} failed; manifest: {result.manifest}")
    if not result.failed:
        return 0
    # Exit status: 1 when some videos failed (the cache holds the others), 2 when none is in the cache.
    none = result.transcoded + result.skipped == 0
    print(f"centrifuge: error: {'all' if none else len(result.failed)} of {result.total} videos failed; they are "
          f"listed in {result.manifest.parent / FAILURES} and retried on the next run", file=sys.stderr)
    return 2 if none else 1
