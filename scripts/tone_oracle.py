"""How far tone alone separates blends: an oracle that knows the true layers but may only re-tone the blend.

    python scripts/tone_oracle.py clips/ [--block 16] [--tone-match] [--json tone-oracle.json]

For every pair of the videos (the blends of `centrifuge evaluate`: 32 frames, 112², alpha 0.5, the same
clips), each true layer L_k is approximated by the best least-squares gain and offset of the blend V,
O_k = a V + b, fitted per colour channel:

- *global*: one (a, b) per channel for the whole clip (a brightness or colour shift of the input;
  `centrifuge.tone.tone_oracle`, which `evaluate` reports);
- *block*: one (a, b) per channel, frame and ``--block``-pixel square (a tone that varies across the frame).

The outputs are clipped to [-1, 1] and scored as `evaluate` scores a model (Eq. 3, permutation invariant,
against the identity). A model whose figure is near the global oracle's separates by tone only; the block
oracle also gains where one layer is locally flat, which is where a tone map can pass for a content split.

With ``--tone-match`` the pairs are blended as ``centrifuge evaluate --tone-match`` blends them (the second clip
given the first's colour statistics): there the block oracle bounds what a tone-grid head with blocks of that
size can reach by re-toning, where the global oracle is near the identity.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from centrifuge.blend import blend
from centrifuge.data import all_pairs
from centrifuge.evaluate import load_clips
from centrifuge.losses import identity_outputs, pit_loss
from centrifuge.sources import video_files
from centrifuge.tone import affine_fit, tone_oracle
from centrifuge.tone_match import tone_matched


def blocks(x: torch.Tensor, size: int) -> torch.Tensor:
    """``[..., H, W]`` -> ``[..., H/size, W/size, size, size]`` (H, W cropped to multiples of ``size``)."""
    h, w = x.shape[-2] // size * size, x.shape[-1] // size * size
    x = x[..., :h, :w].unflatten(-2, (h // size, size)).unflatten(-1, (w // size, size))
    return x.transpose(-3, -2)


def oracle_ratios(clips: torch.Tensor, block: int, tone_match: bool = False) -> list[dict[str, float]]:
    """Per pair: the global and block oracles' loss over the identity's (of tone-matched pairs with
    ``tone_match``)."""
    rows = []
    for i, j in all_pairs(len(clips)):
        targets = torch.stack([clips[i], clips[j]])
        targets = (tone_matched(targets) if tone_match else targets)[None]  # [1, 2, 3, T, H, W]
        mix = blend(targets[:, 0], targets[:, 1], 0.5)
        identity, _ = pit_loss(identity_outputs(mix, 2), targets)
        v = mix[:, None].expand_as(targets)
        glob = tone_oracle(mix, targets)
        vb, tb = blocks(v, block), blocks(targets, block)
        local = affine_fit(vb, tb, (-2, -1)).transpose(-3, -2).flatten(-4, -3).flatten(-2, -1).clamp(-1, 1)
        cropped = targets[..., : local.shape[-2], : local.shape[-1]]
        crop_identity, _ = pit_loss(identity_outputs(mix[..., : local.shape[-2], : local.shape[-1]], 2), cropped)
        rows.append({"a": i, "b": j, "global": (pit_loss(glob, targets)[0] / identity).item(),
                     "block": (pit_loss(local, cropped)[0] / crop_identity).item()})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("videos", nargs="+", metavar="VIDEO_OR_DIR")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--block", type=int, default=16, help="square of the block oracle, in pixels (default 16)")
    p.add_argument("--tone-match", action="store_true",
                   help="blend each pair's clips with one colour statistics, as evaluate --tone-match does")
    p.add_argument("--json", type=Path, help="also write the per-pair figures here")
    args = p.parse_args()
    try:
        paths = video_files(args.videos)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if len(paths) < 2:
        print("error: give at least two videos", file=sys.stderr)
        return 2
    rows = oracle_ratios(load_clips(paths, args.frames, args.size), args.block, args.tone_match)
    for r in rows:
        r["clips"] = [paths[r["a"]].name, paths[r["b"]].name]
    for key in ("global", "block"):
        vals = [r[key] for r in rows]
        print(f"{key} tone oracle: mean {statistics.fmean(vals):.3f}, median {statistics.median(vals):.3f}, "
              f"best {min(vals):.3f}, worst {max(vals):.3f} x identity, {len(vals)} pairs")
    if args.json:
        args.json.write_text(json.dumps({"block": args.block, "tone_match": args.tone_match, "per_pair": rows},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
