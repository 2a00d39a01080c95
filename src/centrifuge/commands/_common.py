"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CentrifugeError


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def add_synth_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that shape clips rendered from photos (TrainConfig's ``synth_*``), for train and synth alike."""
    p.add_argument("--synth-motion", type=float, metavar="P",
                   help="probability of non-rigid motion (a swaying flow field), and of parallax (a near and a far "
                        "plane), in each photo clip (default 0)")
    p.add_argument("--synth-fast", type=float, metavar="P",
                   help="probability that a moving photo clip's camera is fast (1.5 to 5%% of the view's width a "
                        "frame, else 0.2 to 1.5%%; 15%% of the cameras stay still either way; default 0.3)")
    p.add_argument("--synth-camera", type=float, metavar="P",
                   help="probability that a photo clip gets a real camera's flaws: flicker, sensor noise and "
                        "JPEG-like compression, each of a random strength (default 0)")


def positive_number(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def check_photo_folders(photos: list[str], cutouts: list[str]) -> None:
    """One clear error for a photo or cut-out folder that is missing or holds no image files."""
    from ..synth import list_images

    for item in [*photos, *cutouts]:
        if not Path(item).exists():
            raise CentrifugeError(f"no such file or folder: {item}")
        if not list_images(item):
            raise CentrifugeError(f"no images (JPEG, PNG, WebP...) found in {item}")


def video_paths(items: list[str]) -> list[Path]:
    """Expand files and folders (recursive) into a list of video files; a missing path is an error."""
    from ..sources import video_files

    paths: list[Path] = []
    for item in items:
        if not Path(item).exists():
            raise CentrifugeError(f"no such file or folder: {item}")
        found = video_files([item])  # a file gives itself, so only a folder can give nothing
        if not found:
            raise CentrifugeError(f"no videos found in folder: {item}")
        paths.extend(found)
    return paths


def write_json(path: str | Path, data: Any, overwrite: bool = False) -> None:
    """Write JSON atomically; refuse to replace an existing file unless ``overwrite``."""
    path = Path(path)
    refuse_existing(path, overwrite)
    from ..checkpoint import atomic_write

    try:
        text = json.dumps(data, indent=2, allow_nan=False)
    except ValueError as e:  # NaN is not JSON: refuse rather than write a file no reader accepts
        raise CentrifugeError(f"refusing to write {path}: a figure is not finite") from e
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


#: The flags several commands share, each with its one definition: name -> (flag, ``add_argument`` keywords).
SHARED_FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "model": ("--model", {"help": "model file, run folder, or default (the packaged model, used without this flag)"}),
    "device": ("--device", {"default": "auto", "help": "auto, cpu, cuda or cuda:N (default: auto)"}),
    "precision": ("--precision", {"default": "auto", "choices": ["auto", "fp32", "bf16", "fp16"],
                                  "help": "autocast precision (default: bf16 on GPUs that have it and on CPUs "
                                          "with AMX-BF16, else fp32)"}),
    "no_progress": ("--no-progress", {"action": "store_true", "help": "no progress bar"}),
    "json": ("--json", {"help": "also write the figures to this JSON file"}),
    "overwrite_json": ("--overwrite", {"action": "store_true", "help": "replace an existing --json file"}),
}


def add_shared_args(p: Any, *names: str, **helps: str | None) -> None:
    """Add the :data:`SHARED_FLAGS` ``names`` to the parser ``p``, in that order; ``helps`` gives a flag the help
    text its command needs instead (``name=text``; None: none)."""
    for name in names:
        flag, options = SHARED_FLAGS[name]
        p.add_argument(flag, **({**options, "help": helps[name]} if name in helps else options))


def refuse_existing(path: str | Path, overwrite: bool) -> None:
    """One clear error for an output file that exists, unless ``overwrite``."""
    if not overwrite and Path(path).exists():
        raise CentrifugeError(f"{path} exists (pass --overwrite to replace it)")


def add_backend_arg(p: Any) -> None:
    p.add_argument("--backend", choices=["pytorch", "onnxruntime"], default=None,
                   help="what runs the model: pytorch (the default for weights and run folders; on the CPU it was "
                   "measured on, its model call at the default precision, bf16 on AMX, was the fastest, and in "
                   "fp32 the two were within noise: docs/performance.md) or onnxruntime, which runs a file written "
                   "by `centrifuge export` (--model NAME.onnx; CPU, fp32; needs pip install "
                   "\"visual-centrifuge[onnx]\"). An .onnx --model runs with onnxruntime")


# flag -> ModelConfig field, for the flags that override one field of the network
_MODEL_FLAGS = {"layers": "n_layers", "width": "width", "final_endpoint": "final_endpoint",
                "corrector_steps": "corrector_steps", "decoder_width": "decoder_width",
                "corrector": "corrector", "residual": "residual", "tone_grid": "tone_grid",
                "tone_curve": "tone_curve"}


def add_model_args(p: Any) -> None:
    """The flags that override the preset's network (``ModelConfig``)."""
    p.add_argument("--layers", type=int, help="number of output layers n")
    p.add_argument("--corrector", action=argparse.BooleanOptionalAction, default=None,
                   help="predictor-corrector (default: as the preset)")
    p.add_argument("--corrector-steps", type=int, help="number of correction steps (paper: 1)")
    p.add_argument("--width", type=float, help="channel width multiplier")
    p.add_argument("--decoder-width", type=float, help="decoder channel width multiplier (default: --width)")
    p.add_argument("--residual", action=argparse.BooleanOptionalAction, default=None,
                   help="each output layer is the input plus the decoder's output (default: as the preset)")
    p.add_argument("--final-endpoint", help="encoder endpoint: Mixed_3c, Mixed_4f or Mixed_5c")
    p.add_argument("--tone-grid", type=int, metavar="S",
                   help="each layer is the input re-toned by a gain and offset per colour channel that the decoder "
                        "writes on a grid of stride S (2, 4, 8 or 16); 0: full-resolution layers "
                        "(default: as the preset)")
    p.add_argument("--tone-curve", action=argparse.BooleanOptionalAction, default=None,
                   help="with --tone-grid: the tone map adds a quadratic term per colour channel, a curve per block "
                        "instead of a line (default: as the preset)")


def apply_model_args(args: argparse.Namespace, model_cfg: Any) -> None:
    """Set the ``ModelConfig`` fields that ``args`` override."""
    for flag, name in _MODEL_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            setattr(model_cfg, name, value)
