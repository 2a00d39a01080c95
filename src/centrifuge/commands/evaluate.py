"""``centrifuge evaluate``: identity baseline vs model on blended pairs."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import CentrifugeError
from ._common import add_backend_arg, add_shared_args, int_at_least, refuse_existing, video_paths, write_json


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="PIT loss and PSNR of a model on blended pairs, against the identity",
                       description="Blend pairs of distinct videos (alpha = 0.5, centre window and crop) and "
                       "report the mean permutation-invariant loss and matched-layer PSNR of the identity "
                       "baseline and of the model, and the loss of a tone oracle (each true layer as the best gain "
                       "and offset of the blend, fitted knowing the layers: what re-toning alone reaches).")
    p.add_argument("videos", nargs="+", metavar="VIDEO_OR_DIR")
    add_shared_args(p, "model", model="model file, run folder, or default (the packaged model, used without "
                   "this flag), or an .onnx file "
                   "written by `centrifuge export`")
    p.add_argument("--frames", type=int_at_least(1), default=32, help="clip length of each blend (default 32)")
    p.add_argument("--size", type=int_at_least(8), default=112,
                   help="clip size H = W of each blend (default 112)")
    p.add_argument("--pairs", type=int_at_least(1), help="evaluate N seeded random pairs instead of all pairs")
    p.add_argument("--involving", nargs="+", metavar="VIDEO",
                   help="only pairs that include at least one of these videos (e.g. a held-out split)")
    p.add_argument("--exclude-trained", nargs="?", const="", metavar="MODEL",
                   help="leave out every video the model was trained on, so that only pairs of unseen clips are "
                        "scored (matched by file name); MODEL: a run folder or weights file (default: --model)")
    p.add_argument("--reflection", action="store_true",
                   help="blend each pair like a scene and its reflection: the second clip blurred, ghosted and "
                        "faded, its weight changing across the frame around 0.5 (the same blend every time)")
    p.add_argument("--tone-match", action="store_true",
                   help="give the second clip of each pair the first one's colour statistics (per-channel mean and "
                        "spread) before blending: tone then cannot tell the layers apart, only content can")
    p.add_argument("--frozen", nargs="?", const="both", choices=["both", "one"],
                   help="freeze clips at their middle frame: both clips of every pair (the same pairs without motion: "
                        "a model that uses motion scores worse there, one that scores alike splits by appearance "
                        "alone), or only the second (one still layer and one moving, Table 3's easiest case)")
    p.add_argument("--per-pair", action="store_true", help="also print the figures of each pair, clips named")
    p.add_argument("--seed", type=int, default=0, help="seed of the --pairs sample (default 0)")
    p.add_argument("--batch-size", type=int_at_least(1), default=4, help="blends per forward pass (default 4)")
    add_shared_args(p, "json", "overwrite_json", "device", "precision")
    add_backend_arg(p)
    p.set_defaults(func=run)


def _load(args: argparse.Namespace) -> tuple[Any, dict[str, Any], Any, Any]:
    """The model as ``--backend`` runs it, its info, its device, and a PyTorch module of its architecture (for
    the memory check: the model itself, or for ONNX Runtime one built from the file's config)."""
    from ..backends import choose_backend, load_onnx
    from ..checkpoint import load_model
    from ..devices import pick_device
    from ..model import build_model

    if choose_backend(args.model, args.backend) == "onnxruntime":
        model, info = load_onnx(args.model, args.device, args.precision)
        return model, info, pick_device("cpu"), build_model(info["config"])
    device = pick_device(args.device)
    model, info = load_model(args.model, device)
    return model, info, device, model


def run(args: argparse.Namespace) -> int:
    import torch

    from ..devices import autocast_dtype
    from ..evaluate import choose_pairs, evaluate_clips, format_pairs, format_table, freeze, load_clips
    from ..memory import check_fits, largest_activation
    from ..video import check_video

    paths = video_paths(args.videos)
    # a video named twice (e.g. a folder and a file in it) would blend with itself
    paths = list(dict.fromkeys(p.resolve() for p in paths))
    for path in paths:  # every clip is decoded below: refuse a file that is not a video before any work
        check_video(path)
    if args.exclude_trained is not None:
        from ..backends import is_onnx_file
        from ..evaluate import trained_clip_names

        if is_onnx_file(args.exclude_trained or args.model):
            raise CentrifugeError("--exclude-trained reads the training record of weights or a run folder: give "
                                  "the one the ONNX file was exported from (--exclude-trained MODEL)")
        trained = trained_clip_names(args.exclude_trained or args.model)
        kept = [p for p in paths if p.name not in trained]
        print(f"left out {len(paths) - len(kept)} of {len(paths)} videos the model was trained on")
        paths = kept
    if len(paths) < 2:
        raise CentrifugeError("need at least two distinct videos to make pairs"
                              + (" that the model was not trained on" if args.exclude_trained is not None else ""))
    involving = None
    if args.involving:
        wanted = {p.resolve() for p in video_paths(args.involving)}
        involving = [i for i, p in enumerate(paths) if p in wanted]
        if not involving:
            raise CentrifugeError("none of the --involving videos is among the evaluated videos")
    if args.json:  # fail before the slow part
        refuse_existing(args.json, args.overwrite)
    model, info, device, shape = _load(args)
    pairs = choose_pairs(len(paths), args.pairs, args.seed, involving)
    # the clips, and per batch of pairs: two targets, the blend and the model's largest activation
    pixels = args.frames * args.size * args.size
    batch = min(args.batch_size, len(pairs))
    copies = 2 if args.frozen == "one" else 1  # the clips and their frozen copies
    needed = 4 * pixels * (3 * len(paths) * copies + batch * (3 * 3 + largest_activation(shape)))
    check_fits(needed, device, f"evaluating {len(paths)} clips of {args.frames} frames at {args.size} pixels",
               "lower --frames or --size")
    clips, pairs = freeze(load_clips(paths, args.frames, args.size), pairs, args.frozen)
    amp = autocast_dtype(args.precision, device) if model is shape else None  # ONNX Runtime: fp32
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        result = evaluate_clips(model, clips, pairs, batch_size=args.batch_size, device=device,
                                reflection=args.reflection, tone_match=args.tone_match)
    result["reflection"], result["tone_match"], result["frozen"] = args.reflection, args.tone_match, args.frozen
    result["model"] = info["path"]
    result["videos"] = [str(p) for p in paths]
    result["frames"], result["size"] = args.frames, args.size
    names = [p.name for p in paths] + [f"{p.name} (frozen)" for p in paths]
    for row in result["per_pair"]:
        row["clips"] = [names[row["a"]], names[row["b"]]]
    print(format_table(result, f"model: {info['path']}"))
    if args.per_pair:
        print("\n" + format_pairs(result, names))
    if args.json:
        write_json(args.json, result, overwrite=True)
        print(f"wrote {args.json}")
    return 0
