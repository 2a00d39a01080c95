"""``centrifuge separate``: a real video in, its layers out (Sec. 5)."""

from __future__ import annotations

import argparse

from ..errors import CentrifugeError
from ._common import add_backend_arg, add_shared_args, int_at_least

_positive, _non_negative = int_at_least(1), int_at_least(0)


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "separate", help="separate a video into layers",
        description="Separate a video into layers with a trained model (Sec. 5). Writes layer_0.mp4, ... (the "
        "two most dissimilar layers by default, or all with --layers all), preview.mp4 (input and chosen "
        "layers side by side), contact.png and layers.json into OUTDIR. The video is processed window by "
        "window, so memory does not grow with its length.")
    p.add_argument("input", metavar="INPUT", help="video file")
    p.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="output folder (created if missing)")
    add_shared_args(p, "model", model="model file, run folder, or default (the packaged model, used without "
                   "this flag), or an .onnx file "
                   "written by `centrifuge export`")
    p.add_argument("--layers", choices=["best2", "all"], default="best2",
                   help="best2: the two most dissimilar layers (default); all: every output layer")
    p.add_argument("--size", type=_positive, metavar="S",
                   help="process with the shortest side at S pixels; layers are brought back to the input "
                   "size (default: twice the model's training size if the video is larger than that)")
    p.add_argument("--tile", action="store_true",
                   help="process overlapping square tiles at full resolution (or at --size) instead of resizing")
    p.add_argument("--tile-size", type=_positive, metavar="N",
                   help="tile side in pixels for --tile (default: twice the model's training size)")
    p.add_argument("--no-detail", dest="detail", action="store_false",
                   help="do not add the input's fine detail to layers predicted at reduced size")
    p.add_argument("--window", type=_positive, help="frames per model window (default: the training clip length)")
    p.add_argument("--overlap", type=_non_negative, help="frames shared by consecutive windows (default: window/4)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty OUTDIR, replacing the outputs of this tool (layer_N.mp4, preview.mp4, "
                   "contact.png, layers.json) and nothing else")
    add_shared_args(p, "no_progress", "device", "precision")
    add_backend_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..separate import separate

    if args.tile_size and not args.tile:
        raise CentrifugeError("--tile-size needs --tile")
    if args.window is not None and args.overlap is not None and args.overlap >= args.window:
        raise CentrifugeError(f"--overlap ({args.overlap}) must be smaller than --window ({args.window})")
    result = separate(args.input, model=args.model, out_dir=args.out, layers=args.layers, size=args.size,
                      device=args.device, precision=args.precision, window=args.window, overlap=args.overlap,
                      progress=not args.no_progress, tile=(args.tile_size or True) if args.tile else None,
                      detail=args.detail, overwrite=args.overwrite, backend=args.backend)
    meta = result.metadata
    rec = meta["recomposition"]["chosen_pair"]
    print(f"{meta['input']['frames']} frames, {meta['timings']['frames_per_s']} frames/s; chosen slots "
          f"{result.chosen[0]} and {result.chosen[1]}; their mean recomposes the input at {rec['psnr_db']} dB PSNR")
    tone = meta["content_or_tone"]
    kind = "different content" if tone["split"] == "content" else "tonal variants of one picture (not layers)"
    print(f"the chosen layers' gradient correlation is {tone['chosen_pair']:.2f}: {kind}")
    for path in result.files.values():
        print(f"wrote {path}")
    return 0
