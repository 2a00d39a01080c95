"""Can the network learn to separate by motion alone? Two textures of one kind, each sliding its own way.

    python scripts/motion_toy.py [--tone-grid 8] [--corrector] [--steps 1000] [--frames 8] [--size 64] [--seed 0] \
        [--out FILE]
    python scripts/motion_toy.py --init MODEL --steps 0      # judge a trained model (a run folder or weights)

Every blend is two independent smooth random textures drawn from one distribution (so no single frame tells
them apart: the sum of two such textures is another texture of the kind), each translated by its own whole
number of pixels per frame, different from the other's. Motion is the only cue. The ``cpu-small`` network
(its width and output layers; ``--tone-grid`` as the packaged model, 0 for full-resolution residual layers;
``--corrector`` adds the paper's full-resolution corrector after that predictor) is trained on them from
scratch with AdamW (lr 2e-3, batch 8, Eq. 2-3: the training loss) and then judged on 64 fresh blends as
`evaluate` judges clips: the PIT loss over the identity's, once moving and once with both textures frozen at
their middle frame, where nothing can split them. A network that learns motion scores well
below 1 moving and about 1 frozen; one that cannot, about 1 on both. ``--out`` writes the trained weights (for
``centrifuge train --init``); ``--init`` starts from a model's weights instead (its own architecture).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from centrifuge.checkpoint import load_model, read_model_info, save_weights
from centrifuge.config import load_preset
from centrifuge.errors import CheckpointError
from centrifuge.evaluate import frozen_clips
from centrifuge.losses import identity_outputs, pit_loss
from centrifuge.model import build_model
from centrifuge.textures import texture_layers


def blends(gen: torch.Generator, count: int, frames: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` blends: mixes ``[B, 3, T, H, W]`` and layers ``[B, 2, 3, T, H, W]`` (alpha = 0.5)."""
    stacked = torch.stack([texture_layers(gen, frames, size) for _ in range(count)])
    return stacked.mean(dim=1), stacked


def frozen(layers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same blends with both layers their middle frame repeated."""
    still = frozen_clips(layers.flatten(0, 1)).view_as(layers)
    return still.mean(dim=1), still


@torch.no_grad()
def ratio(model: torch.nn.Module, mix: torch.Tensor, layers: torch.Tensor) -> float:
    """Mean over blends of the model's PIT loss over the identity's."""
    model.eval()
    out = torch.cat([model(mix[i:i + 8]).float().clamp(-1, 1) for i in range(0, len(mix), 8)])
    model.train()
    return statistics.fmean((pit_loss(out, layers)[0] / pit_loss(identity_outputs(mix, 2), layers)[0]).tolist())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tone-grid", type=int, default=8, help="0: full-resolution residual layers (default 8)")
    p.add_argument("--corrector", action="store_true", help="add a full-resolution corrector (predictor-corrector)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--judge", type=int, default=64, help="fresh blends to judge on (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", metavar="MODEL", help="start from this model (run folder or weights file)")
    p.add_argument("--out", metavar="FILE", help="write the trained weights here (.safetensors; not overwritten)")
    args = p.parse_args()
    if min(args.frames, args.judge) < 1 or args.steps < 0 or args.size < 16:
        print("error: --frames and --judge must be at least 1, --steps at least 0, --size at least 16",
              file=sys.stderr)
        return 2
    if args.out and Path(args.out).exists():
        print(f"error: {args.out} exists; not overwritten", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    try:
        if args.init:
            model_cfg = read_model_info(args.init)[0]
            model = load_model(args.init)[0].train()
        else:
            model_cfg, _ = load_preset("cpu-small")
            model_cfg.tone_grid = args.tone_grid
            model_cfg.corrector = args.corrector
            model = build_model(model_cfg)
    except (OSError, ValueError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        mix, layers = blends(gen, 8, args.frames, args.size)
        loss = pit_loss(model(mix).float(), layers)[0].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps:
            print(f"step {step}: loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    judge = torch.Generator().manual_seed(10_000 + args.seed)
    mix, layers = blends(judge, args.judge, args.frames, args.size)
    moving = ratio(model, mix, layers)
    still = ratio(model, *frozen(layers))
    if args.out:
        save_weights(args.out, model, model_cfg, {"trained_on": ["motion_toy"]})
    head = f"tone grid {model_cfg.tone_grid}" + (" + corrector" if model_cfg.corrector else "")
    print(f"{head}, {args.steps} steps, {args.frames}x{args.size}x{args.size}: "
          f"model / identity moving {moving:.3f}, frozen {still:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
