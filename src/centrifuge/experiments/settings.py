"""What an experiment was asked to do, and its data: the held-out part and the evaluation videos.

    A folder of videos is split with :func:`centrifuge.sources.split_videos` (``val_fraction``, ``seed``), or
    ``held_out`` names the held-out videos. Models are trained on the training part only. When the held-out
    part has at least :data:`MIN_HELD_OUT_VIDEOS` videos, evaluation blends held-out clips with held-out clips
    only; with fewer (a handful of clips) there are too few such pairs, so a pair is evaluated when at least
    one of its two clips is held out (its partner may be a training video). With Kinetics CSVs, training uses
    the rows of the ``train`` split and evaluation a seeded subset of the validation rows (``val`` /
    ``validate``).
"""

from __future__ import annotations

import random
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CentrifugeError
from ..sources import list_videos, load_kinetics, split_videos

#: Kinetics CSV ``split`` values that mean validation.
VAL_SPLITS = ("val", "validate", "valid", "validation")
#: With at least this many held-out videos, pairs are held-out x held-out only (see the module docstring).
MIN_HELD_OUT_VIDEOS = 5

@dataclass
class Settings:
    """What ``centrifuge experiment`` was asked to do (see the command's help for each field)."""

    data: str
    out: str
    kinetics_csv: list[str] = field(default_factory=list)
    preset: str = "cpu-tiny"
    iterations: int | None = None
    model: str | None = None
    frames: int | None = None
    size: int | None = None
    pairs: int = 200
    windows: int = 3
    max_videos: int = 32
    seed: int = 0
    val_fraction: float = 0.2
    held_out: list[str] = field(default_factory=list)
    models_dir: str | None = None
    device: str = "auto"
    batch_size: int = 8
    overwrite: bool = False
    progress: bool = False

    def command(self, name: str) -> str:
        """The ``centrifuge experiment`` command line that gives these settings."""
        default = Settings(data="", out="")
        args = ["centrifuge", "experiment", name, "--data", self.data]
        for csv_path in self.kinetics_csv:
            args += ["--kinetics-csv", csv_path]
        args += ["--out", self.out]
        for key in ("preset", "iterations", "model", "frames", "size", "pairs", "windows", "max_videos", "seed",
                    "val_fraction", "models_dir", "device"):
            value = getattr(self, key)
            if value is not None and value != getattr(default, key):
                args += [f"--{key.replace('_', '-')}", str(value)]
        if self.held_out:
            args += ["--held-out", *self.held_out]
        return shlex.join(args)


@dataclass
class Video:
    """One video of the evaluation set."""

    path: Path
    held_out: bool
    label: str | None = None


def _folder_label(path: Path, root: Path) -> str | None:
    # root/<class>/video.mp4 (Kinetics-style folders): the class is the parent folder; flat folders have none.
    return path.parent.name if path.parent != root else None


def _match_held_out(videos: list[Path], names: Sequence[str], root: Path) -> set[Path]:
    chosen: set[Path] = set()
    for name in names:
        hits = [v for v in videos if v.name == name or v == Path(name) or v == root / name
                or v.resolve() == Path(name).resolve()]
        if not hits:
            raise CentrifugeError(f"--held-out video not found under {root}: {name}")
        chosen.update(hits)
    return chosen


def split_data(s: Settings) -> tuple[list[Path], list[Video], str]:
    """Training videos, evaluation videos (held-out ones first) and a sentence describing the split."""
    root = Path(s.data)
    if not root.exists():
        raise CentrifugeError(f"no such file or folder: {s.data}")
    rng = random.Random(f"experiment-videos:{s.seed}")
    if s.kinetics_csv:
        entries = []
        for csv_path in s.kinetics_csv:
            if not Path(csv_path).is_file():
                raise CentrifugeError(f"no such Kinetics CSV: {csv_path}")
            found, _ = load_kinetics(csv_path, root)
            entries.extend(found)
        train = sorted({e.path for e in entries if e.split.lower() == "train" and e.path is not None})
        val = sorted({(e.path, e.label or None) for e in entries
                      if e.split.lower() in VAL_SPLITS and e.path is not None}, key=lambda x: str(x[0]))
        if len(val) < 2:
            raise CentrifugeError(f"need at least 2 validation clips (split {'/'.join(VAL_SPLITS)}) found under "
                                  f"{root}, found {len(val)}")
        n_val = len(val)
        if len(val) > s.max_videos:
            val = sorted(rng.sample(val, s.max_videos), key=lambda x: str(x[0]))
        videos = [Video(p, True, label) for p, label in val]
        how = (f"Kinetics: {len(train)} training clips (split `train`), {len(videos)} of {n_val} validation "
               f"clips (seeded subset); pairs of validation clips")
        return train, videos, how
    if not root.is_dir():
        raise CentrifugeError(f"--data must be a folder of videos (or a Kinetics root with --kinetics-csv): {s.data}")
    paths = list(dict.fromkeys(list_videos(root)))
    if len(paths) < 2:
        raise CentrifugeError(f"need at least 2 videos in {s.data}, found {len(paths)}")
    if s.held_out:
        held = _match_held_out(paths, s.held_out, root)
        train = [p for p in paths if p not in held]
        val = [p for p in paths if p in held]
        how = f"held-out videos named on the command line: {len(val)}"
    else:
        train, val = split_videos(paths, s.val_fraction, s.seed)
        how = f"seeded split (fraction {s.val_fraction}, seed {s.seed}), held-out videos: {len(val)}"
    if not val:
        raise CentrifugeError("no held-out videos: raise --val-fraction or name them with --held-out")
    strict = len(val) >= MIN_HELD_OUT_VIDEOS
    held = sorted(rng.sample(val, s.max_videos)) if len(val) > s.max_videos else val
    others = [] if strict else train
    if len(held) + len(others) > s.max_videos:
        others = sorted(rng.sample(others, max(s.max_videos - len(held), 0)))
    videos = [Video(p, True, _folder_label(p, root)) for p in held]
    videos += [Video(p, False, _folder_label(p, root)) for p in others]
    names = ", ".join(p.name for p in val[:8]) + (", ..." if len(val) > 8 else "")
    how += (f" ({names}); training videos: {len(train)}; "
            + ("pairs of held-out clips" if strict else
               f"fewer than {MIN_HELD_OUT_VIDEOS} held-out videos, so every evaluated pair includes at least one "
               "held-out clip (its partner may come from a training video)"))
    return train, videos, how
