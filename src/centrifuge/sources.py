"""Data sources: which videos there are. Video files under folders, saved file lists, seeded splits, the
Kinetics-600 index, and the videos of a training run; clips and datasets are in :mod:`centrifuge.data`."""

from __future__ import annotations

import csv
import logging
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import TrainConfig

__all__ = ["VIDEO_EXTENSIONS", "list_videos", "walk_once", "split_videos", "write_file_list", "read_file_list",
           "KineticsEntry", "kinetics_filename", "load_kinetics", "training_videos", "video_files"]

log = logging.getLogger("centrifuge")

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ogv"}
)


# --------------------------------------------------------------------------------------------------------
# file lists and splits


def _is_video(name: str) -> bool:
    # Hidden files include VideoWriter's ".name.part.mp4" temporaries, which are never complete videos.
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def list_videos(root: str | Path) -> list[Path]:
    """All video files under ``root`` (recursive, by extension, hidden files skipped), sorted."""
    root = Path(root)
    if root.is_file():
        return [root] if _is_video(root.name) else []
    if not root.is_dir():
        raise FileNotFoundError(f"no such directory: {root}")
    found = [Path(dirpath) / name for dirpath, names in walk_once(root) for name in names if _is_video(name)]
    return sorted(found)


def walk_once(root: str | Path, hidden_folders: bool = True) -> Iterator[tuple[str, list[str]]]:
    """``(folder, file names)`` under ``root``, following links to folders but entering each folder once:
    a link loop (or two links to one folder) would otherwise walk forever or list files twice."""
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, names in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        if not hidden_folders:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        yield dirpath, names


def split_videos(
    paths: Sequence[str | Path], val_fraction: float, seed: int
) -> tuple[list[Path], list[Path]]:
    """Seeded train/validation split, independent of the input order.

    ``round(val_fraction * n)`` videos go to validation (at least one when ``val_fraction > 0`` and at
    least one left for training). Both lists come back sorted.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    items = sorted({Path(p) for p in paths})
    n = len(items)
    n_val = round(val_fraction * n)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    order = list(range(n))
    random.Random(f"split:{seed}").shuffle(order)
    val_idx = set(order[:n_val])
    train = [p for i, p in enumerate(items) if i not in val_idx]
    val = [p for i, p in enumerate(items) if i in val_idx]
    return train, val


def write_file_list(paths: Iterable[str | Path], file: str | Path, root: str | Path | None = None) -> None:
    """Save paths one per line (POSIX separators), relative to ``root`` when given."""
    lines = []
    for p in paths:
        p = Path(p)
        if root is not None:
            p = Path(os.path.relpath(p, root))
        lines.append(p.as_posix())
    Path(file).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def read_file_list(file: str | Path, root: str | Path | None = None) -> list[Path]:
    """Read a list saved by :func:`write_file_list`; relative entries are joined to ``root`` when given.

    Blank lines and lines starting with ``#`` are ignored.
    """
    out = []
    for line in Path(file).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line)
        out.append(Path(root) / p if root is not None and not p.is_absolute() else p)
    return out


# --------------------------------------------------------------------------------------------------------
# Kinetics-600


@dataclass
class KineticsEntry:
    """One row of a Kinetics CSV; ``path`` is the local file, ``None`` when it is missing."""

    label: str
    youtube_id: str
    time_start: int
    time_end: int
    split: str
    path: Path | None = None

    @property
    def filename(self) -> str:
        return kinetics_filename(self.youtube_id, self.time_start, self.time_end)


def kinetics_filename(youtube_id: str, time_start: int, time_end: int) -> str:
    """The conventional clip name ``{youtube_id}_{start:06d}_{end:06d}.mp4``."""
    return f"{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"


def _index_files(root: Path) -> dict[str, list[Path]]:
    """One recursive scan of ``root``: file stem -> video files with that stem."""
    index: dict[str, list[Path]] = {}
    for path in list_videos(root):
        index.setdefault(path.stem, []).append(path)
    return index


def _pick(candidates: list[Path], split: str) -> Path:
    if len(candidates) == 1:
        return candidates[0]

    # Prefer .mp4, then a file that lives under a directory named after the split.
    def score(p: Path) -> tuple[int, int, str]:
        return (p.suffix.lower() != ".mp4", split not in p.parts, str(p))

    return min(candidates, key=score)


def load_kinetics(
    csv_path: str | Path, root: str | Path, split: str | None = None
) -> tuple[list[KineticsEntry], int]:
    """Entries of an official Kinetics CSV whose clip exists under ``root``, and the number missing.

    The CSV header is ``label,youtube_id,time_start,time_end,split`` (test CSVs may lack ``label``).
    Clips are found by name anywhere under ``root`` (flat, ``root/split/label/`` or ``root/label/``);
    other video extensions with the same stem are accepted too. Rows of other splits are dropped when
    ``split`` is given. Missing clips are logged once as a warning, not raised.
    """
    csv_path, root = Path(csv_path), Path(root)
    index = _index_files(root)
    entries: list[KineticsEntry] = []
    missing = 0
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = {name.strip() for name in reader.fieldnames or []}
        for needed in ("youtube_id", "time_start", "time_end"):
            if needed not in fields:
                raise ValueError(f"{csv_path}: missing column {needed!r} (have {sorted(fields)})")
        for row in reader:
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            row_split = row.get("split", "") or (split or "")
            if split is not None and row_split != split:
                continue
            try:
                entry = KineticsEntry(
                    label=row.get("label", ""),
                    youtube_id=row["youtube_id"],
                    time_start=int(float(row["time_start"])),
                    time_end=int(float(row["time_end"])),
                    split=row_split,
                )
            except ValueError:
                log.warning("%s: skipping malformed row %r", csv_path, row)
                continue
            candidates = index.get(Path(entry.filename).stem)
            if candidates is None:
                missing += 1
                continue
            entry.path = _pick(candidates, row_split)
            entries.append(entry)
    if missing:
        log.warning(
            "%s: %d of %d clips missing under %s", csv_path.name, missing, missing + len(entries), root
        )
    return entries, missing


def training_videos(cfg: TrainConfig) -> list[Path]:
    """The list of training videos: folders/files in ``cfg.data``, a Kinetics CSV, or a saved file list."""
    if cfg.kinetics_csv:
        root = cfg.data[0] if cfg.data else str(Path(cfg.kinetics_csv).parent)
        entries, _ = load_kinetics(cfg.kinetics_csv, root, split=cfg.kinetics_split)  # warns of missing files
        return [e.path for e in entries if e.path is not None]
    if cfg.file_list:
        return [Path(p) for p in read_file_list(cfg.file_list)]
    return video_files(cfg.data)


def video_files(items: list[str]) -> list[Path]:
    """Files as given, folders expanded (recursively) into their videos."""
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        paths.extend(list_videos(p) if p.is_dir() else [p])
    return paths
