"""``centrifuge train``: the paper's recipe by default (preset ``paper-112``)."""

from __future__ import annotations

import argparse
import copy
import os
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from ..checkpoint import CONFIG, WEIGHTS, recover_checkpoint, remove_checkpoint
from ..config import TrainConfig, list_presets, load_preset, validate_train_config
from ..errors import CentrifugeError
from ..locks import hold_folder
from ._common import add_model_args, add_shared_args, add_synth_arguments, apply_model_args, check_photo_folders

if TYPE_CHECKING:
    from ..model import ModelConfig

DEFAULT_PRESET = "paper-112"
# flag -> TrainConfig field, for the flags that override one field
_TRAIN_FLAGS = ["init", "iterations", "batch_size", "micro_batch", "lr", "momentum", "weight_decay", "optimizer",
                "frames", "size", "resize_factor", "workers", "seed", "alpha", "kinetics_csv", "kinetics_split",
                "file_list", "photo_fraction", "synth_motion", "synth_fast", "synth_camera", "reflection",
                "tone_match", "same_photo", "still_layer", "motion_textures", "tone_free_loss", "log_every",
                "ckpt_every", "image_every", "grad_clip", "ema", "videos_per_blend", "val_every", "val_pairs"]


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on blended video pairs",
                       description="Train on blended pairs of videos (Sec. 4). Defaults are the paper's recipe "
                       "(preset paper-112); flags override single fields of the preset. Under torchrun this "
                       "runs DistributedDataParallel, one process per device.")
    p.add_argument("data", nargs="*", help="video files or folders (Kinetics: its root folder, with --kinetics-csv)")
    p.add_argument("--preset", help=f"preset name ({', '.join(list_presets())}) or JSON file "
                   f"(default: {DEFAULT_PRESET}; on --resume: the run's saved settings)")
    p.add_argument("--out", "-o", help="run folder for checkpoints and TensorBoard logs (default: runs/PRESET)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, with its saved settings (under any "
                   "number of ranks); start a new run if there is none")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if --out holds a run")
    p.add_argument("--kinetics-csv", help="official Kinetics CSV (label,youtube_id,time_start,time_end,split)")
    p.add_argument("--kinetics-split", help="rows of this split only (default: train)")
    p.add_argument("--file-list", help="text file with one video path per line")
    p.add_argument("--photos", nargs="+", metavar="DIR",
                   help="folders of still photos (JPEG/PNG/WebP, recursive) rendered into training clips: a virtual "
                        "camera over a photo with objects moving across it (centrifuge/synth.py)")
    p.add_argument("--cutouts", nargs="+", metavar="DIR",
                   help="folders of cut-outs with alpha (RGBA PNG) that move across the photo clips (default: "
                        "soft-edged crops of the photos)")
    p.add_argument("--photo-fraction", type=float, metavar="F",
                   help="probability that a layer of a blend is rendered from photos (default 0.5; 1 without videos)")
    add_synth_arguments(p)
    p.add_argument("--reflection", type=float, metavar="P",
                   help="make a share P of the blends like a scene and its reflection: the second layer blurred, "
                        "ghosted and faded, mixed in by a weight that changes across the frame (default 0)")
    p.add_argument("--tone-match", type=float, metavar="P",
                   help="make a share P of the blends of layers with the same colour statistics (each layer given the "
                        "first one's per-channel mean and spread), so that only content and motion tell them apart "
                        "(default 0)")
    p.add_argument("--same-photo", type=float, metavar="P",
                   help="make a share P of the blends of two clips rendered from one photo on two camera paths, so "
                        "that only where each layer lies and how it moves tell them apart (needs --photos; default 0)")
    p.add_argument("--still-layer", type=float, metavar="P",
                   help="freeze one layer, drawn at random, of a share P of the blends at one of its frames: a still "
                        "scene behind or in front of a moving one, the case the paper finds easiest (default 0)")
    p.add_argument("--motion-textures", type=float, metavar="P",
                   help="make a share P of the blends of two random textures of one kind, each sliding its own way: "
                        "only motion splits them (centrifuge/textures.py; default 0)")
    p.add_argument("--tone-free-loss", type=float, metavar="W",
                   help="add W times a tone-invariant Eq. 3 (each output re-toned towards its target by one gain and "
                        "offset per colour channel) to the loss: it rewards content, not tone (default 0: the paper's)")
    p.add_argument("--init", metavar="MODEL",
                   help="fine-tune: start from these weights (a run folder, a .safetensors file, or 'default' for "
                        "the packaged model); the architecture comes with them, but --corrector adds a new "
                        "corrector after a model that has none")
    p.add_argument("--iterations", type=int, help="iterations; the lr milestones scale with it")
    p.add_argument("--batch-size", type=int, help="global batch size over all ranks (paper: 10)")
    p.add_argument("--micro-batch", type=int,
                   help="clips per forward pass on each rank; gradient accumulation fills the per-rank batch")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], help="optimizer (default: the preset's)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    p.add_argument("--momentum", type=float, help="SGD's momentum (not used by AdamW; default: the preset's)")
    p.add_argument("--weight-decay", type=float, help="weight decay (default: the preset's)")
    p.add_argument("--grad-clip", type=float, metavar="NORM",
                   help="clip the gradient's global norm to this (default: the preset's, usually none)")
    p.add_argument("--ema", type=float, metavar="DECAY",
                   help="keep a moving average of the weights with this decay (e.g. 0.99) and save it as the "
                        "run's model (model.safetensors); the live weights go to live.safetensors (default: none)")
    p.add_argument("--frames", type=int, help="clip length T")
    p.add_argument("--size", type=int, help="crop size H = W")
    p.add_argument("--resize-factor", type=float,
                   help="training clips without --augment: shortest side resized to this x --size before the random "
                        "crop (paper: 1.15; 1.0 matches evaluation's scale)")
    p.add_argument("--alpha", type=float, help="blend weight of Eq. 1 (default 0.5)")
    p.add_argument("--alpha-range", type=float, nargs=2, metavar=("A", "B"), help="sample alpha in [A, B]")
    p.add_argument("--videos-per-blend", type=int, help="videos mixed per training example (default 2)")
    p.add_argument("--frozen", action="store_true", help="train on frozen clips (one frame repeated, Table 3)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="scale, camera motion, colour filters, frozen and reversed clips (small datasets)")
    p.add_argument("--preload", action=argparse.BooleanOptionalAction, default=None,
                   help="decode every video once into memory (small datasets)")
    add_model_args(p)
    p.add_argument("--workers", type=int, help="data-loading worker processes per rank")
    p.add_argument("--seed", type=int,
                   help="seed of the weights, the data order and the blends (default: the preset's)")
    p.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="BatchNorm statistics over all ranks' clips (SyncBatchNorm; GPUs only)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile the model")
    p.add_argument("--compile-loss", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the loss (default: on; falls back to eager where compiling fails)")
    p.add_argument("--log-every", type=int, metavar="N", help="print and log the loss every N iterations")
    p.add_argument("--ckpt-every", type=int, metavar="N",
                   help="write a checkpoint every N iterations (and at the end); --resume continues from the last")
    p.add_argument("--image-every", type=int, metavar="N",
                   help="log example layers to TensorBoard every N iterations (0: never)")
    p.add_argument("--val-data", nargs="+", metavar="VIDEO_OR_DIR",
                   help="held-out videos: every --val-every steps, the PIT loss / identity ratio on their pairs")
    p.add_argument("--val-every", type=int, help="validation interval in steps (0: none)")
    p.add_argument("--val-pairs", type=int, help="at most this many seeded validation pairs (default 16)")
    add_shared_args(p, "no_progress", "device", "precision")
    p.set_defaults(func=run)


def configure(args: argparse.Namespace, base: tuple[ModelConfig, TrainConfig] | None = None):
    """The (ModelConfig, TrainConfig) that ``args`` describe: ``base`` (default: the preset) with flags applied."""
    model_cfg, cfg = copy.deepcopy(base) if base is not None else load_preset(args.preset or DEFAULT_PRESET)
    for name in _TRAIN_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            setattr(cfg, name, value)
    apply_model_args(args, model_cfg)
    if args.alpha_range:
        cfg.alpha_range = tuple(args.alpha_range)
    cfg.frozen = cfg.frozen or args.frozen
    for name in ("augment", "preload", "sync_bn", "compile", "compile_loss"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    cfg.device, cfg.precision = args.device, args.precision if args.precision != "auto" else cfg.precision
    if args.data:
        cfg.data = list(args.data)
    if getattr(args, "val_data", None):
        cfg.val_data = list(args.val_data)
    for name in ("photos", "cutouts"):
        if getattr(args, name, None):
            setattr(cfg, name, list(getattr(args, name)))
    cfg.out = str(run_folder(args))
    assert {f.name for f in fields(TrainConfig)} >= set(_TRAIN_FLAGS)
    model_cfg.__post_init__()  # the flags' values, checked before any work
    validate_train_config(cfg)
    return model_cfg, cfg


def run_folder(args: argparse.Namespace) -> Path:
    return Path(args.out or f"runs/{Path(args.preset or DEFAULT_PRESET).stem}")


def _resume_configs(args: argparse.Namespace, out: Path) -> tuple[ModelConfig, TrainConfig]:
    """The run's saved configs with the flags given now; a flag that would change the run is an error."""
    from ..config import read_run_config
    from ..train import RESUME_FIELDS, changed_fields

    saved_model, saved_cfg, _ = read_run_config(out)
    model_cfg, cfg = configure(args, (saved_model, saved_cfg))
    # With --preset, the preset plus flags must still describe this run (the same command line resumes it).
    ref_model, ref_cfg = configure(args) if args.preset else (model_cfg, cfg)
    if not (args.data or args.kinetics_csv or args.file_list):
        ref_cfg.data, ref_cfg.kinetics_csv, ref_cfg.file_list = saved_cfg.data, saved_cfg.kinetics_csv, \
            saved_cfg.file_list
    changed = [f"model.{k}" for k, v in ref_model.to_dict().items() if saved_model.to_dict()[k] != v]
    changed += changed_fields(saved_cfg, ref_cfg)
    if changed:
        not_flags = {"data", "out", "kinetics_csv", "file_list"}
        may = sorted(f"--{f.replace('_', '-')}" for f in RESUME_FIELDS - not_flags)
        raise CentrifugeError(f"--resume continues {out} with its saved settings, but these differ from its "
                              f"{CONFIG}: {', '.join(changed)} (only the data paths and {', '.join(may)} may change)")
    return model_cfg, cfg


def run(args: argparse.Namespace) -> int:
    out = run_folder(args)
    if args.resume and args.overwrite:
        raise CentrifugeError("--resume and --overwrite exclude each other")
    if os.environ.get("RANK", "0") != "0":  # rank 0 alone writes (and locks) the run folder
        return _run(args, out, main_rank=False)
    with hold_folder(out, "run folder", remove_if_empty=True):
        recover_checkpoint(out)
        return _run(args, out, main_rank=True)


def _run(args: argparse.Namespace, out: Path, main_rank: bool) -> int:
    from ..train import train
    from ..video import check_video

    exists = (out / CONFIG).exists()
    if exists and not (args.resume or args.overwrite):
        raise CentrifugeError(f"{out} already holds a run: pass --resume to continue it or --overwrite")
    if args.resume and exists:
        model_cfg, cfg = _resume_configs(args, out)
    else:
        model_cfg, cfg = configure(args)
    if not cfg.data and not cfg.kinetics_csv and not cfg.file_list and not cfg.photos:
        raise CentrifugeError("no training data: give video folders/files, --kinetics-csv, --file-list or --photos")
    for item in [*cfg.data, *cfg.val_data, cfg.kinetics_csv, cfg.file_list]:
        if item and not Path(item).exists():
            raise CentrifugeError(f"no such file or folder: {item}")
    for item in [*cfg.data, *cfg.val_data]:
        if Path(item).is_file():  # a video named on the command line (a folder's are found by extension)
            check_video(item)
    check_photo_folders(cfg.photos, cfg.cutouts)
    if args.overwrite and exists and main_rank:
        # Start afresh: a crash before the first checkpoint must not leave the old run to be resumed.
        remove_checkpoint(out)
    state = train(model_cfg, cfg, resume=args.resume, progress=not args.no_progress)
    if main_rank:
        print(f"trained to step {state.get('step')}; weights in {out / WEIGHTS}")
    return 0
