"""Data: video lists, Kinetics-600 index, seeded splits, clip sampling/augmentation and blend datasets.

Training items are synthetic blends of ``k`` real videos (Eq. 1 of the paper); the model sees the blend and
is asked to recover the layers. Clips are ``uint8 [T, H, W, 3]`` until :func:`to_model` turns them into
float ``[3, T, H, W]`` in [-1, 1].
"""

from __future__ import annotations

import csv
import logging
import os
import random
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import Augmentation, augment_clip
from .blend import mix
from .video import VideoError, VideoInfo, probe, read_video

if TYPE_CHECKING:
    from .synth import PhotoSynth

__all__ = [
    "VIDEO_EXTENSIONS",
    "to_model",
    "from_model",
    "list_videos",
    "split_videos",
    "write_file_list",
    "read_file_list",
    "KineticsEntry",
    "load_kinetics",
    "ClipSpec",
    "sample_clip",
    "FrameCache",
    "BlendDataset",
    "PairDataset",
    "all_pairs",
]

log = logging.getLogger("centrifuge")

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ogv"}
)


# --------------------------------------------------------------------------------------------------------
# tensors


def to_model(frames_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``uint8 [..., T, H, W, 3]`` -> ``float32 [..., 3, T, H, W]`` in [-1, 1] (``x / 127.5 - 1``)."""
    if isinstance(frames_uint8, np.ndarray):
        # torch cannot wrap negative strides (e.g. a flipped view)
        frames_uint8 = np.ascontiguousarray(frames_uint8)
    x = torch.as_tensor(frames_uint8)
    if x.ndim < 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames [..., T, H, W, 3], got shape {tuple(x.shape)}")
    return (x.to(torch.float32) / 127.5 - 1.0).movedim(-1, -4).contiguous()


def from_model(x: torch.Tensor) -> np.ndarray:
    """``[..., 3, T, H, W]`` in [-1, 1] -> ``uint8 [..., T, H, W, 3]`` (clamped and rounded)."""
    if x.ndim < 4 or x.shape[-4] != 3:
        raise ValueError(f"expected [..., 3, T, H, W], got shape {tuple(x.shape)}")
    y = ((x.detach().to(torch.float32) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return y.movedim(-4, -1).cpu().contiguous().numpy()


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


# --------------------------------------------------------------------------------------------------------
# clip sampling


@dataclass
class ClipSpec:
    """What a clip looks like: ``frames`` x ``size`` x ``size``.

    Training clips are random windows, resized so the shortest side is ``round(resize_factor * size)``,
    randomly cropped to ``size`` and randomly flipped left-right. Validation clips (``train=False``) are
    centre windows, resized to ``size`` and centre-cropped. With ``augment``, training clips are decoded at
    shortest side ``augment.zoom * size`` and :func:`centrifuge.augment.augment_clip` replaces the crop and
    flip (scale, camera motion, colour, frozen and reversed clips).
    """

    frames: int
    size: int
    train: bool
    resize_factor: float = 1.15
    augment: Augmentation | None = None  # training only: replaces the crop and flip (see centrifuge.augment)

    def __post_init__(self) -> None:
        if not self.resize_factor >= 1.0:
            raise ValueError(f"--resize-factor {self.resize_factor}: the crop must fit, so it must be at least 1.0")

    @property
    def decode_size(self) -> int:
        """Shortest side frames are decoded at before cropping."""
        if not self.train:
            return self.size
        return round((self.augment.zoom if self.augment else self.resize_factor) * self.size)


def _window_start(num_frames: int, spec: ClipSpec, rng: random.Random | None) -> int:
    slack = max(0, num_frames - spec.frames)
    if spec.train:
        return (rng or random).randint(0, slack)
    return slack // 2


def _loop(clip: np.ndarray, frames: int) -> np.ndarray:
    """Repeat a short clip in time until it has ``frames`` frames."""
    if len(clip) == 0:
        raise VideoError("empty clip")
    if len(clip) >= frames:
        return clip[:frames]
    return clip[np.arange(frames) % len(clip)]


def _crop_flip(clip: np.ndarray, spec: ClipSpec, rng: random.Random | None) -> np.ndarray:
    if spec.train and spec.augment is not None:
        return augment_clip(clip, spec.size, rng or random.Random(), spec.augment)
    _, h, w, _ = clip.shape
    s = spec.size
    if h < s or w < s:
        raise ValueError(f"clip {w}x{h} is smaller than the crop {s}x{s}")
    if spec.train:
        r = rng or random
        y, x = r.randint(0, h - s), r.randint(0, w - s)
        clip = clip[:, y : y + s, x : x + s]
        if r.random() < 0.5:
            clip = clip[:, :, ::-1]
    else:
        y, x = (h - s) // 2, (w - s) // 2
        clip = clip[:, y : y + s, x : x + s]
    return np.ascontiguousarray(clip)


def _freeze(clip: np.ndarray, rng: random.Random) -> np.ndarray:
    """One random frame repeated over time (the "frozen" videos of Table 3)."""
    t = rng.randrange(len(clip))
    return np.ascontiguousarray(np.broadcast_to(clip[t], clip.shape))


def sample_clip(
    path: str | Path, spec: ClipSpec, rng: random.Random | None = None, info: VideoInfo | None = None
) -> np.ndarray:
    """Decode one clip ``uint8 [spec.frames, spec.size, spec.size, 3]`` following ``spec``.

    Videos shorter than ``spec.frames`` are looped. ``rng`` drives the training augmentation (the
    ``random`` module is used when it is None); validation clips are deterministic. Pass ``info`` to skip
    probing the file again.
    """
    if spec.train and rng is None:
        rng = random.Random()
    info = info or probe(path)
    start = _window_start(info.num_frames, spec, rng)
    clip = read_video(path, start, spec.frames, size=spec.decode_size)
    if len(clip) < spec.frames and start > 0:
        # The frame count was an estimate that overshot: take the last frames that really exist.
        end = start + len(clip)
        clip = read_video(path, max(0, end - spec.frames) if len(clip) else 0, spec.frames, spec.decode_size)
    return _crop_flip(_loop(clip, spec.frames), spec, rng)


class FrameCache:
    """Videos decoded once into memory (at the clip's decode size), sampled from without decoding.

    This is what makes training on a handful of clips fast: augmentation (window, crop, flip) is just
    slicing. ``max_frames_per_video`` keeps a centre window of each video to bound memory. Videos that
    fail to decode are recorded in ``failed_videos`` and have no frames (``frames[i] is None``).
    """

    def __init__(self, paths: Sequence[str | Path], spec: ClipSpec, max_frames_per_video: int | None = None):
        self.paths = [Path(p) for p in paths]
        self.spec = spec
        self.frames: list[np.ndarray | None] = []
        self.failed_videos: set[Path] = set()
        for path in self.paths:
            try:
                start, count = 0, None
                if max_frames_per_video is not None:
                    n = probe(path).num_frames
                    start, count = max(0, (n - max_frames_per_video) // 2), max_frames_per_video
                clip = read_video(path, start, count, size=spec.decode_size)
                if len(clip) == 0:
                    raise VideoError(f"no frames decoded from {path}")
                self.frames.append(clip)
            except VideoError as e:
                log.warning("skipping video that cannot be decoded: %s", e)
                self.failed_videos.add(path)
                self.frames.append(None)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def nbytes(self) -> int:
        return sum(f.nbytes for f in self.frames if f is not None)

    def sample(self, index: int, rng: random.Random | None = None) -> np.ndarray:
        """A clip of video ``index`` following the spec (see :func:`sample_clip`)."""
        frames = self.frames[index]
        if frames is None:
            raise VideoError(f"video failed to decode: {self.paths[index]}")
        start = _window_start(len(frames), self.spec, rng)
        clip = _loop(frames[start : start + self.spec.frames], self.spec.frames)
        return _crop_flip(clip, self.spec, rng)


# --------------------------------------------------------------------------------------------------------
# datasets


class _ClipSource:
    """Clips of videos by index, from a FrameCache or decoded on demand, with failure bookkeeping."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        spec: ClipSpec,
        preload: bool,
        max_frames_per_video: int | None,
        lru: int = 0,
    ):
        self.paths = [Path(p) for p in paths]
        self.spec = spec
        self.cache = FrameCache(self.paths, spec, max_frames_per_video) if preload else None
        self.failed_videos: set[Path] = set(self.cache.failed_videos) if self.cache else set()
        self._infos: dict[int, VideoInfo] = {}
        self._lru: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lru_size = lru

    def ok(self, index: int) -> bool:
        return self.paths[index] not in self.failed_videos

    def clip(self, index: int, rng: random.Random | None) -> np.ndarray | None:
        """The clip, or None (after logging once) when the video cannot be decoded."""
        if not self.ok(index):
            return None
        if self.cache is not None:
            return self.cache.sample(index, rng)
        if index in self._lru:
            self._lru.move_to_end(index)
            return self._lru[index]
        path = self.paths[index]
        try:
            if index not in self._infos:
                self._infos[index] = probe(path)
            clip = sample_clip(path, self.spec, rng, info=self._infos[index])
        except (VideoError, ValueError) as e:
            log.warning("skipping video that cannot be decoded: %s", e)
            self.failed_videos.add(path)
            return None
        if self._lru_size:
            self._lru[index] = clip
            while len(self._lru) > self._lru_size:
                self._lru.popitem(last=False)
        return clip


def _weights(k: int, alpha: float) -> torch.Tensor:
    # Eq. 1 for two videos; uniform for more (the paper's k > 2 experiments average the videos).
    if k == 2:
        return torch.tensor([1.0 - alpha, alpha], dtype=torch.float32)
    return torch.full((k,), 1.0 / k, dtype=torch.float32)


def _item(
    layers_uint8: list[np.ndarray], weights: torch.Tensor, videos: list[int]
) -> dict[str, torch.Tensor]:
    layers = torch.stack([to_model(c) for c in layers_uint8])
    return {
        "mix": mix(layers, weights),
        "layers": layers,
        "alpha": weights,
        "videos": torch.tensor(videos, dtype=torch.int64),
    }


class _VideoDataset(Dataset):
    """A dataset drawing clips from a ``_ClipSource`` (``self._source``)."""

    _source: _ClipSource

    @property
    def paths(self) -> list[Path]:
        """The videos, by index (``videos`` in items indexes this list)."""
        return self._source.paths

    @property
    def failed_videos(self) -> set[Path]:
        """Videos that failed to decode so far (skipped)."""
        return self._source.failed_videos


class BlendDataset(_VideoDataset):
    """Synthetic training blends: each item mixes clips of ``k`` different videos.

    Items are dicts with ``mix`` ``[3, T, H, W]``, ``layers`` ``[k, 3, T, H, W]`` (all in [-1, 1]),
    ``alpha`` ``[k]`` (the mixing weights: ``(1 - alpha, alpha)`` for ``k = 2``, uniform otherwise) and
    ``videos`` ``[k]`` (indices into ``paths``; -1 for a clip rendered from photos).

    With ``synth`` (a :class:`centrifuge.synth.PhotoSynth`), each layer is instead a clip rendered from
    photos with probability ``photo_fraction`` (always when there are no videos): video+video,
    video+photo and photo+photo blends.

    Item ``i`` is a pure function of ``(seed, epoch, i * world_size + rank)``: reproducible, independent of
    the number of DataLoader workers (different workers get different indices, so their items differ), and
    distinct across ranks. With DDP either give each rank its ``rank``/``world_size`` and a plain sampler,
    or use a ``DistributedSampler`` and leave ``rank=0, world_size=1``. Call :meth:`set_epoch` before
    iterating each epoch (workers must not be persistent for it to reach them).

    A video that fails to decode is logged once, added to ``failed_videos`` and replaced by another random
    video; only when fewer than ``k`` usable videos remain is an error raised. (In DataLoader workers the
    set lives in each worker's copy of the dataset.)
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        spec: ClipSpec,
        k: int = 2,
        alpha: float = 0.5,
        alpha_range: tuple[float, float] | None = None,
        frozen: bool = False,
        preload: bool = False,
        seed: int = 0,
        length: int = 1000,
        rank: int = 0,
        world_size: int = 1,
        max_frames_per_video: int | None = None,
        synth: PhotoSynth | None = None,
        photo_fraction: float = 0.5,
    ):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if len(paths) < k and synth is None:
            raise ValueError(f"need at least k={k} videos, got {len(paths)}")
        if not 0.0 <= photo_fraction <= 1.0:
            raise ValueError(f"photo_fraction must be in [0, 1], got {photo_fraction}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        if alpha_range is not None and not 0.0 <= alpha_range[0] <= alpha_range[1] <= 1.0:
            raise ValueError(f"alpha_range must satisfy 0 <= a <= b <= 1, got {alpha_range}")
        self.spec = spec
        self.k = k
        self.alpha = alpha
        self.alpha_range = alpha_range
        self.frozen = frozen
        self.seed = seed
        self.length = length
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.synth = synth
        self.photo_fraction = photo_fraction if paths else 1.0
        self._source = _ClipSource(paths, spec, preload, max_frames_per_video)
        self._check_enough()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> random.Random:
        """The random stream of item ``index`` in the current epoch."""
        global_index = index * self.world_size + self.rank
        return random.Random(f"blend:{self.seed}:{self.epoch}:{global_index}")

    def _check_enough(self) -> None:
        if self.synth is not None:  # photos fill in for missing videos
            return
        usable = sum(self._source.ok(i) for i in range(len(self.paths)))
        if usable < self.k:
            raise RuntimeError(
                f"only {usable} of {len(self.paths)} videos can be decoded; need {self.k} per blend "
                f"(failed: {', '.join(sorted(map(str, self.failed_videos)))})"
            )

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = self.rng(index)
        n = len(self.paths)
        chosen: list[int] = []
        clips: list[np.ndarray] = []
        tried: set[int] = set()
        # Rejection sampling gives distinct videos without an O(n) shuffle per item (Kinetics is large);
        # failed videos are simply drawn past.
        while len(chosen) < self.k:
            if self.synth is not None and (rng.random() < self.photo_fraction or len(tried) == n):
                chosen.append(-1)
                clips.append(self.synth.clip(index, self.spec.frames, self.spec.size, random.Random(rng.random())))
            elif len(tried) == n:
                break
            else:
                i = rng.randrange(n)
                if i in tried:
                    continue
                tried.add(i)
                clip = self._source.clip(i, rng)
                if clip is None:
                    continue
                chosen.append(i)
                clips.append(clip)
            if self.frozen:
                clips[-1] = _freeze(clips[-1], rng)
        if len(chosen) < self.k:
            self._check_enough()
            raise RuntimeError(f"could not decode {self.k} videos for item {index}")
        alpha = rng.uniform(*self.alpha_range) if self.alpha_range is not None else self.alpha
        return _item(clips, _weights(self.k, alpha), chosen)


def all_pairs(
    n: int, max_pairs: int | None = None, seed: int = 0, involving: Sequence[int] | None = None
) -> list[tuple[int, int]]:
    """All unordered pairs ``(i, j)``, ``i < j < n`` (only those that include an index of ``involving`` when
    given, e.g. a held-out split), or a seeded subset of ``max_pairs`` of them (sorted)."""
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if involving is not None:
        keep = set(involving)
        pairs = [p for p in pairs if keep & set(p)]
    if max_pairs is not None and max_pairs < len(pairs):
        pairs = sorted(random.Random(f"pairs:{seed}").sample(pairs, max_pairs))
    return pairs


class PairDataset(_VideoDataset):
    """Deterministic validation blends of given video pairs (centre windows, centre crops).

    Items are like :class:`BlendDataset`'s (``videos`` holds the pair). Pairs whose videos cannot be
    decoded are dropped when the dataset is built (probing each video once); a video that fails only
    later is recorded in ``failed_videos`` and its item is replaced by the next working pair.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        spec: ClipSpec,
        pairs: Sequence[tuple[int, int]],
        alpha: float = 0.5,
        preload: bool = False,
        cache_clips: int = 8,
    ):
        if spec.train:
            raise ValueError("PairDataset needs a validation ClipSpec (train=False)")
        self.spec = spec
        self.alpha = alpha
        # A validation clip is always the centre window, so that is all a preload needs to keep.
        self._source = _ClipSource(paths, spec, preload, spec.frames, lru=0 if preload else cache_clips)
        n = len(self._source.paths)
        for a, b in pairs:
            if not (0 <= a < n and 0 <= b < n) or a == b:
                raise ValueError(f"bad pair {(a, b)} for {n} videos")
        if not preload:
            for i in sorted({i for pair in pairs for i in pair}):
                try:
                    self._source._infos[i] = probe(self._source.paths[i])
                except VideoError as e:
                    log.warning("skipping video that cannot be decoded: %s", e)
                    self._source.failed_videos.add(self._source.paths[i])
        self.pairs = [(a, b) for a, b in pairs if self._source.ok(a) and self._source.ok(b)]
        if len(self.pairs) < len(pairs):
            log.warning(
                "dropped %d of %d validation pairs with undecodable videos",
                len(pairs) - len(self.pairs),
                len(pairs),
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self.pairs):
            raise IndexError(index)
        for offset in range(len(self.pairs)):
            a, b = self.pairs[(index + offset) % len(self.pairs)]
            clip_a = self._source.clip(a, None)
            clip_b = self._source.clip(b, None) if clip_a is not None else None
            if clip_a is not None and clip_b is not None:
                return _item([clip_a, clip_b], _weights(2, self.alpha), [a, b])
        raise RuntimeError("no validation pair can be decoded")
