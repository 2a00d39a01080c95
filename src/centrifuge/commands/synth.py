"""``centrifuge synth``: a few example clips rendered from photos, as ``train --photos`` sees them."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CentrifugeError
from ._common import check_photo_folders, int_at_least, positive_number


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="render example training clips from still photos",
                       description="Render clips the way 'centrifuge train --photos' does (a virtual camera over "
                       "a photo, objects moving across it) and write them with a contact sheet, so you can see "
                       "what the model trains on.")
    p.add_argument("photos", nargs="+", metavar="PHOTO_DIR", help="folders of photos (JPEG/PNG/WebP, recursive)")
    p.add_argument("-o", "--out", required=True, help="output folder (synth_000.mp4, ..., contact.png)")
    p.add_argument("--cutouts", nargs="+", metavar="DIR", help="folders of cut-outs with alpha (RGBA PNG)")
    p.add_argument("--n", type=int_at_least(1), default=8, help="number of clips (default 8)")
    p.add_argument("--frames", type=int_at_least(1), default=32, help="frames per clip (default 32)")
    p.add_argument("--size", type=int_at_least(1), default=128, help="clip height and width (default 128)")
    p.add_argument("--fps", type=positive_number, default=25.0, help="frame rate of the written clips (default 25)")
    p.add_argument("--seed", type=int, default=0, help="clip i is a pure function of (seed, i)")
    p.add_argument("--overwrite", action="store_true", help="replace clips and contact sheet already in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..checkpoint import atomic_write
    from ..synth import PhotoSynth
    from ..video import write_video

    check_photo_folders(args.photos, args.cutouts or [])
    out = Path(args.out)
    names = [f"synth_{i:03d}.mp4" for i in range(args.n)] + ["contact.png"]
    existing = [n for n in names if (out / n).exists()]
    if existing and not args.overwrite:
        raise CentrifugeError(f"{out / existing[0]} exists (pass --overwrite to replace it)")
    synth = PhotoSynth(args.photos, args.cutouts or [], seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(args.n):
        clip = synth.clip(i, args.frames, args.size)
        write_video(out / names[i], clip, args.fps)
        rows.append(np.concatenate(list(clip[np.linspace(0, args.frames - 1, 6).round().astype(int)]), axis=1))
        print(f"wrote {out / names[i]}")
    from PIL import Image

    atomic_write(out / "contact.png", lambda tmp: Image.fromarray(np.concatenate(rows, 0)).save(tmp, format="PNG"))
    print(f"wrote {out / 'contact.png'} (one clip a row, six frames from first to last)")
    if synth.skipped:
        print(f"skipped {len(synth.skipped)} unreadable images")
    return 0
