"""``centrifuge synth``: a few example clips rendered from photos, as ``train --photos`` sees them."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from ..config import TrainConfig, validate_train_config
from ._common import add_synth_arguments, check_photo_folders, int_at_least, positive_number


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="render example training clips from still photos",
                       description="Render clips the way 'centrifuge train --photos' does (a virtual camera over "
                       "a photo, objects moving across it) and write them with a contact sheet, so you can see "
                       "what the model trains on.")
    p.add_argument("photos", nargs="+", metavar="PHOTO_DIR", help="folders of photos (JPEG/PNG/WebP, recursive)")
    p.add_argument("-o", "--out", required=True,
                   help="output folder (synth_000.mp4, ..., contact.png, and synth.json last: the settings and files)")
    p.add_argument("--cutouts", nargs="+", metavar="DIR", help="folders of cut-outs with alpha (RGBA PNG)")
    p.add_argument("--n", type=int_at_least(1), default=8, help="number of clips (default 8)")
    p.add_argument("--frames", type=int_at_least(2), default=32,
                   help="frames per clip (default 32; at least 2: one frame is a still image, not a video)")
    p.add_argument("--size", type=int_at_least(1), default=128, help="clip height and width (default 128)")
    p.add_argument("--fps", type=positive_number, default=25.0, help="frame rate of the written clips (default 25)")
    p.add_argument("--seed", type=int, default=0, help="clip i is a pure function of (seed, i)")
    add_synth_arguments(p)
    p.add_argument("--overwrite", action="store_true",
                   help="write into a folder holding synth's files, replacing them (and only them: synth_NNN.mp4, "
                   "contact.png, synth.json)")
    p.set_defaults(func=run)


#: TrainConfig fields that shape the rendered clips, with the same flags as train's
_SYNTH_FIELDS = ("synth_motion", "synth_fast", "synth_camera")
#: The names synth writes into --out: the only files it refuses to replace without --overwrite, or removes.
OUTPUT_NAMES = re.compile(r"synth_\d{3,}\.mp4|contact\.png|synth\.json")
MANIFEST = "synth.json"


def _listed(folder: Path) -> list[str]:
    return json.loads((folder / MANIFEST).read_text())["files"]


def run(args: argparse.Namespace) -> int:
    from ..output_set import OutputSet
    from ..train import photo_synth

    check_photo_folders(args.photos, args.cutouts or [])
    cfg = TrainConfig(photos=list(args.photos), cutouts=list(args.cutouts or []), seed=args.seed,
                      **{k: getattr(args, k) for k in _SYNTH_FIELDS if getattr(args, k) is not None})
    validate_train_config(cfg)
    synth = photo_synth(cfg)
    out = OutputSet(args.out, "synth", OUTPUT_NAMES, MANIFEST, _listed, args.overwrite)
    try:
        _render(args, synth, out, cfg)
        written = out.commit()
    except BaseException:
        out.abort()
        raise
    for name in sorted(written, key=lambda n: (not n.startswith("synth_"), n)):
        print(f"wrote {written[name]}" + (" (one clip a row, six frames from first to last)"
                                          if name == "contact.png" else ""))
    if synth.skipped:
        print(f"skipped {len(synth.skipped)} unreadable images")
    return 0


def _render(args: argparse.Namespace, synth: Any, out: Any, cfg: TrainConfig) -> None:
    """The clips, the contact sheet and the manifest (written last: it marks a finished set), staged in ``out``."""
    import numpy as np
    from PIL import Image

    from ..video_writer import write_video

    names, rows = [f"synth_{i:03d}.mp4" for i in range(args.n)], []
    for i, name in enumerate(names):
        clip = synth.clip(i, args.frames, args.size)
        write_video(out.path(name), clip, args.fps)
        rows.append(np.concatenate(list(clip[np.linspace(0, args.frames - 1, 6).round().astype(int)]), axis=1))
    Image.fromarray(np.concatenate(rows, 0)).save(out.path("contact.png"), format="PNG")
    settings = {k: getattr(args, k) for k in ("photos", "cutouts", "n", "frames", "size", "fps", "seed")}
    settings.update({k: getattr(cfg, k) for k in _SYNTH_FIELDS})
    out.path(MANIFEST).write_text(json.dumps({"files": [*names, "contact.png", MANIFEST], "settings": settings},
                                             indent=2) + "\n")
