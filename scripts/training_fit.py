"""How well models fit their own training distribution: fresh photo blends, judged like `evaluate` judges clips.

    python scripts/training_fit.py --photos photos/images --cutouts photos/sprites [--videos clips/ ...]
        [--tone-match] [--same-photo] [--frozen] [--blends 128] MODEL...

The blends are drawn as training draws them (the `cpu-small` preset's 16-frame 96² clips unless ``--frames`` and
``--size`` say otherwise, its augmentation,
half the layers rendered from photos by `centrifuge/synth.py`), from a seed no training run uses, so every blend
is new to every model while its kind is the one they trained on. Each model's PIT loss (Eq. 2) is divided by the
identity's on the same blend. Set beside the model's figure on new content, the gap between the two is what
transfer costs; the figure here is what fitting has reached. The blends are also split by how much their
stiller layer moves (mean absolute frame difference, in [-1, 1] units), since a still layer is the one the
paper finds easiest to take out of a moving one.

With ``--videos``, half of the layers come from those clips instead (as ``--photo-fraction 0.5`` trains);
with ``--tone-match``, every blend is made of tone-matched layers (``centrifuge/tone_match.py``), so that the
fit is the fit of a content split: set beside ``evaluate --tone-match`` on unseen clips, it tells whether a
model cannot split content at all (both near 1) or splits it only in what it trained on (a gap).
With ``--same-photo``, every blend is of two clips of one photo on two camera paths (``train --same-photo``):
where each layer lies and how it moves are all that tell them apart. With ``--frozen``, each model is also
judged on the same blends with every layer frozen at its middle frame (and blended again): the difference is
what the model gets from motion.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence

import torch

from centrifuge.augment import Augmentation
from centrifuge.blend import mix
from centrifuge.checkpoint import load_model
from centrifuge.config import load_preset
from centrifuge.data import BlendDataset, ClipSpec
from centrifuge.devices import autocast_dtype
from centrifuge.evaluate import frozen_clips
from centrifuge.losses import identity_outputs, pit_loss
from centrifuge.sources import list_videos
from centrifuge.synth import PhotoSynth

STILL = 0.01  # a layer whose frames change by less than this on average counts as still


def fresh_blends(photos: list[str], cutouts: list[str], count: int, seed: int, videos: Sequence[str] = (),
                 tone_match: bool = False, frames: int | None = None, size: int | None = None,
                 same_photo: bool = False) -> list[dict]:
    """``count`` training blends of the ``cpu-small`` recipe from ``seed``: photos only, or half the layers
    from ``videos`` (files or folders); every blend tone-matched with ``tone_match``, or of two clips of one
    photo with ``same_photo``; the preset's clip geometry unless ``frames`` or ``size`` is given."""
    _, cfg = load_preset("cpu-small")
    spec = ClipSpec(frames=frames or cfg.frames, size=size or cfg.size, train=True, resize_factor=cfg.resize_factor,
                    augment=Augmentation() if cfg.augment else None)
    synth = PhotoSynth(photos, cutouts, seed=seed)
    paths = [str(v) for root in videos for v in list_videos(root)]
    data = BlendDataset(paths, spec, k=2, alpha=cfg.alpha, seed=seed, length=count, synth=synth,
                        tone_match=1.0 if tone_match else 0.0, same_photo=1.0 if same_photo else 0.0)
    return [data[i] for i in range(count)]


def frozen(blends: list[dict]) -> list[dict]:
    """The same blends with every layer its middle frame repeated, blended again (Eq. 1): no motion."""
    out = []
    for item in blends:
        layers = frozen_clips(item["layers"])
        out.append(item | {"layers": layers, "mix": mix(layers, item["alpha"])})
    return out


def identity_losses(blends: list[dict]) -> list[float]:
    """The identity's PIT loss per blend: every model's denominator, computed once."""
    return [pit_loss(identity_outputs(b["mix"][None], 2), b["layers"][None])[0].item() for b in blends]


def ratios(model: torch.nn.Module, blends: list[dict], identity: list[float]) -> list[float]:
    """The model's PIT loss over the identity's, per blend."""
    dtype = autocast_dtype("auto", torch.device("cpu"))  # bf16 where the CPU has it, as training ran
    out = []
    for item, base in zip(blends, identity, strict=True):
        with torch.no_grad(), torch.autocast("cpu", dtype or torch.float32, enabled=dtype is not None):
            layers = model(item["mix"][None]).float()
        out.append(pit_loss(layers, item["layers"][None])[0].item() / base)
    return out


def stiller_motion(blends: list[dict]) -> list[float]:
    return [min(item["layers"][k].diff(dim=1).abs().mean().item() for k in range(2)) for item in blends]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", metavar="MODEL", help="run folders or weights files")
    p.add_argument("--photos", nargs="+", required=True, metavar="DIR")
    p.add_argument("--cutouts", nargs="*", default=[], metavar="DIR")
    p.add_argument("--videos", nargs="*", default=[], metavar="VIDEO_OR_DIR",
                   help="real clips for half of the layers (default: photos only)")
    p.add_argument("--tone-match", action="store_true", help="every blend of tone-matched layers")
    p.add_argument("--same-photo", action="store_true", help="every blend of two clips of one photo")
    p.add_argument("--frozen", action="store_true",
                   help="also judge every model on the same blends frozen at their middle frame (no motion)")
    p.add_argument("--blends", type=int, default=128)
    p.add_argument("--frames", type=int, help="clip length of each blend (default: the cpu-small preset's, 16)")
    p.add_argument("--size", type=int, help="clip size H = W of each blend (default: the cpu-small preset's, 96)")
    p.add_argument("--seed", type=int, default=9999, help="of the blends (default: one no run trains with)")
    args = p.parse_args()
    for name in ("blends", "frames", "size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            print(f"error: --{name} must be at least 1", file=sys.stderr)
            return 2
    try:
        blends = fresh_blends(args.photos, args.cutouts, args.blends, args.seed, args.videos, args.tone_match,
                              args.frames, args.size, args.same_photo)
        models = [(m, load_model(m)[0].eval()) for m in args.models]
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    motion, identity = stiller_motion(blends), identity_losses(blends)
    still = sum(m < STILL for m in motion)
    kind = ("tone-matched " if args.tone_match else "") + ("photo and video" if args.videos else "photo")
    kind += " (one photo per blend)" if args.same_photo else ""
    still_blends = frozen(blends) if args.frozen else None
    still_identity = identity_losses(still_blends) if still_blends else None
    shape = tuple(blends[0]["mix"].shape[-3:])
    print(f"{len(blends)} fresh {kind} training blends of {shape[0]}x{shape[1]}x{shape[2]} (seed {args.seed}); "
          f"{still} with a still layer")
    for name, model in models:
        r = ratios(model, blends, identity)
        line = f"{name}: mean ratio {statistics.fmean(r):.3f}, median {statistics.median(r):.3f}"
        moving = [x for x, m in zip(r, motion, strict=True) if m >= STILL]
        stills = [x for x, m in zip(r, motion, strict=True) if m < STILL]
        if stills and moving:
            line += f"; with a still layer {statistics.fmean(stills):.3f}, both moving {statistics.fmean(moving):.3f}"
        if still_blends and still_identity:
            line += f"; frozen {statistics.fmean(ratios(model, still_blends, still_identity)):.3f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
