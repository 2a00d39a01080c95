"""``centrifuge bench``: inference time, FLOP/s against the machine's peak, training step and data loading."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import list_presets, load_preset
from ..errors import CentrifugeError
from ._common import (
    add_model_args,
    add_shared_args,
    apply_model_args,
    check_photo_folders,
    positive_number,
    refuse_existing,
    write_json,
)


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure inference and training speed, FLOP/s and data loading",
                       description="Time the network on random clips: median per-clip inference time after "
                       "warm-up, FLOPs per clip, achieved GFLOP/s against the measured peak of a large matrix "
                       "product in the same precision, and the encoder/decoder split. Optionally a training step "
                       "(--train) and data loading from a video folder or a `centrifuge prepare` cache (--data).")
    p.add_argument("--preset", default="paper-112",
                   help=f"model and clip size from a preset ({', '.join(list_presets())}); default paper-112")
    add_model_args(p)
    p.add_argument("--frames", type=int, help="clip length T (default: the preset's)")
    p.add_argument("--size", type=int, help="clip height = width (default: the preset's)")
    p.add_argument("--batch", type=int, default=1, help="clips per forward pass (default 1)")
    add_shared_args(p, "device", "precision", precision="compute precision (default auto: bf16 on GPUs and CPUs "
                    "with hardware bf16 (AMX), else fp32)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the network (default: inference eager, the training step as the preset "
                   "trains; compiling takes tens of seconds, reported and not timed)")
    p.add_argument("--compile-loss", action=argparse.BooleanOptionalAction, default=True,
                   help="with --train: torch.compile the loss, as training does (default: on)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="channels_last_3d memory format (default: on)")
    p.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=True,
                   help="fold BatchNorm into the convolutions for inference (default: on)")
    p.add_argument("--cpu-kernels", action=argparse.BooleanOptionalAction, default=True,
                   help="on CPU, route convolutions and pools to the faster kernels (default: on)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--no-inference", action="store_true", help="skip the inference measurement")
    p.add_argument("--profile", type=int, nargs="?", const=15, default=0, metavar="N",
                   help="also list the N operators taking the most time in one forward and training step "
                   "(default N: 15)")
    p.add_argument("--no-split", action="store_true", help="skip timing the encoders and decoders separately")
    p.add_argument("--train", action="store_true",
                   help="also time a training step as the preset trains (forward, PIT loss, backward, optimizer)")
    p.add_argument("--train-batch", type=int, help="clips per training step (default: the preset's batch size)")
    p.add_argument("--data", metavar="DIR", help="also measure data loading from this video folder or cache")
    p.add_argument("--photos", nargs="+", metavar="DIR",
                   help="also measure blends rendered from these photo folders (with --data: half of the layers)")
    p.add_argument("--cutouts", nargs="+", metavar="DIR", help="cut-outs with alpha for --photos")
    p.add_argument("--workers", type=int, nargs="+", default=[0], metavar="N",
                   help="DataLoader worker counts to measure with --data (default 0)")
    p.add_argument("--data-batches", type=int, default=10, help="batches timed per worker count (default 10)")
    p.add_argument("--peak-size", type=int, help="matrix size for the peak measurement (default 2048 CPU, 8192 GPU)")
    p.add_argument("--peak-seconds", type=positive_number, default=1.0,
                   help="time spent measuring the peak (default 1)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add_shared_args(p, "json", "overwrite_json")
    p.set_defaults(func=run)


def _positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CentrifugeError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def settings_from_args(args: argparse.Namespace):
    """The :class:`~centrifuge.bench.BenchSettings` that ``args`` describe."""
    from ..bench import BenchSettings
    from ..devices import pick_device

    _positive(args, "layers", "corrector_steps", "frames", "size", "batch", "repeats", "train_batch",
              "data_batches", "threads", "peak_size")
    if args.warmup < 0 or any(w < 0 for w in args.workers):
        raise CentrifugeError("--warmup and --workers must be >= 0")
    model_cfg, cfg = load_preset(args.preset)
    apply_model_args(args, model_cfg)
    model_cfg.__post_init__()  # validate the overrides
    if args.no_inference and not args.train and args.data is None and not args.photos:
        raise CentrifugeError("nothing to measure: --no-inference without --train, --data or --photos")
    if args.data is not None and not Path(args.data).is_dir():
        raise CentrifugeError(f"no such folder: {args.data}")
    check_photo_folders(args.photos or [], args.cutouts or [])
    device = pick_device(args.device)
    if device.type == "cuda" and not __import__("torch").cuda.is_available():
        raise CentrifugeError("--device cuda: no CUDA device is available")
    return BenchSettings(
        model=model_cfg, frames=args.frames or cfg.frames, size=args.size or cfg.size, batch=args.batch,
        device=str(device), precision=args.precision, compile=bool(args.compile), compile_loss=args.compile_loss,
        train_compile=cfg.compile if args.compile is None else args.compile,
        channels_last=args.channels_last, fuse=args.fuse, cpu_kernels=args.cpu_kernels, repeats=args.repeats,
        warmup=args.warmup, inference=not args.no_inference, split=not args.no_split, train=args.train,
        optimizer=cfg.optimizer, weight_decay=cfg.weight_decay, train_batch=args.train_batch or cfg.batch_size,
        data=args.data, photos=tuple(args.photos or ()), cutouts=tuple(args.cutouts or ()), workers=tuple(args.workers),
        data_batches=args.data_batches, peak_size=args.peak_size, peak_seconds=args.peak_seconds,
        profile=args.profile)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..bench import format_report, run_bench

    if args.json:  # fail before the slow part
        refuse_existing(args.json, args.overwrite)
    settings = settings_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_bench(settings)
    print(format_report(result))
    if args.json:
        write_json(args.json, result, overwrite=True)
        print(f"wrote {args.json}")
    return 0
