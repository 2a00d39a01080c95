"""Data: clip sampling/augmentation and blend datasets (which videos there are: :mod:`centrifuge.sources`).

Training items are synthetic blends of ``k`` real videos (Eq. 1 of the paper); the model sees the blend and
is asked to recover the layers. Clips are ``uint8 [T, H, W, 3]`` until :func:`centrifuge.frames.to_model`
turns them into float ``[3, T, H, W]`` in [-1, 1].
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import Augmentation, augment_clip
from .blend import mix
from .frames import from_model, to_model
from .reflections import reflection_blend
from .textures import texture_layers
from .tone_match import tone_matched
from .video import VideoError, VideoInfo, probe, read_video

if TYPE_CHECKING:
    from .synth import PhotoSynth

__all__ = [
    "ClipSpec",
    "sample_clip",
    "window_starts",
    "centre_crop",
    "loop_clip",
    "FrameCache",
    "BlendDataset",
    "PairDataset",
    "all_pairs",
]

log = logging.getLogger("centrifuge")

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


def window_starts(num_frames: int, frames: int, windows: int) -> list[int]:
    """Starts of ``windows`` evenly spaced windows of ``frames`` frames: window ``k`` starts ``(k + 1/2) /
    windows`` of the way through the possible starts (a single window is the centre window); duplicates go."""
    slack = max(num_frames - frames, 0)
    starts = [(2 * k + 1) * slack // (2 * windows) for k in range(windows)]
    return list(dict.fromkeys(starts))


def centre_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size`` x ``size`` square of ``[T, H, W, 3]`` frames (a view)."""
    _, h, w, _ = frames.shape
    y, x = (h - size) // 2, (w - size) // 2
    return frames[:, y:y + size, x:x + size]


def _window_start(num_frames: int, spec: ClipSpec, rng: random.Random | None) -> int:
    if spec.train:
        return (rng or random).randint(0, max(0, num_frames - spec.frames))
    return window_starts(num_frames, spec.frames, 1)[0]  # the centre window


def loop_clip(clip: np.ndarray, frames: int) -> np.ndarray:
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
        clip = centre_crop(clip, s)
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
    return _crop_flip(loop_clip(clip, spec.frames), spec, rng)


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
        clip = loop_clip(frames[start : start + self.spec.frames], self.spec.frames)
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
    video+photo and photo+photo blends. With ``reflection`` (``k = 2``), that share of the blends is made like
    a scene and its reflection instead (:func:`centrifuge.reflections.reflection_blend`); ``alpha`` then
    holds the blend's weight at the frame's centre. With ``tone_match``, that share of the blends is made of
    layers given the first one's colour statistics (:func:`centrifuge.tone_match.tone_matched`, before either
    blend), so that tone does not tell them apart. With ``same_photo`` (``k = 2``, with ``synth``), that share of the
    blends is of two clips rendered from one photo on two camera paths: nothing but where the photo lies in each
    frame, and how that moves, tells the layers apart (neither ``tone_match`` nor ``reflection`` applies to
    those). With ``motion_textures`` (``k = 2``), that share is of two random textures of one kind sliding at two
    velocities (:mod:`centrifuge.textures`): only motion splits them. With ``still_layer``, that share of the
    blends has one layer, drawn at random, frozen at one of its frames (Table 3's "1 frozen 1 normal"; the
    paper's easiest case).

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
        reflection: float = 0.0,
        tone_match: float = 0.0,
        same_photo: float = 0.0,
        still_layer: float = 0.0,
        motion_textures: float = 0.0,
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
        if not 0.0 <= reflection <= 1.0 or (reflection and k != 2):
            raise ValueError(f"reflection must be in [0, 1], and 0 unless k = 2; got {reflection} with k={k}")
        if not 0.0 <= tone_match <= 1.0:
            raise ValueError(f"tone_match must be in [0, 1], got {tone_match}")
        if not 0.0 <= same_photo <= 1.0 or (same_photo and (k != 2 or synth is None)):
            raise ValueError(f"same_photo must be in [0, 1], and 0 unless k = 2 with photos; got {same_photo}")
        if not 0.0 <= motion_textures <= 1.0 or (motion_textures and k != 2):
            raise ValueError(f"motion_textures must be in [0, 1], and 0 unless k = 2; got {motion_textures}")
        if not 0.0 <= still_layer <= 1.0:
            raise ValueError(f"still_layer must be in [0, 1], got {still_layer}")
        self.reflection = reflection
        self.same_photo = same_photo
        self.still_layer = still_layer
        self.motion_textures = motion_textures
        self.tone_match = tone_match
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
        if self.same_photo and rng.random() < self.same_photo:  # no draw at 0: items as before
            return self._same_photo_item(index, rng)
        if self.motion_textures and rng.random() < self.motion_textures:  # (likewise)
            return self._texture_item(rng)
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
        self._still_one(clips, rng)
        alpha = self._alpha(rng)
        item = _item(clips, _weights(self.k, alpha), chosen)
        if self.tone_match and rng.random() < self.tone_match:  # no draw at 0: items as before
            item["layers"] = tone_matched(item["layers"])
            item["mix"] = mix(item["layers"], item["alpha"])
        if self.reflection and rng.random() < self.reflection:  # (likewise)
            item["mix"], item["layers"] = reflection_blend(item["layers"], alpha, rng)
        return item

    def _same_photo_item(self, index: int, rng: random.Random) -> dict[str, torch.Tensor]:
        assert self.synth is not None
        photo = self.synth.photo_index(rng)
        clips = [self.synth.clip(index, self.spec.frames, self.spec.size, random.Random(rng.random()), photo=photo)
                 for _ in range(2)]
        if self.frozen:
            clips = [_freeze(c, rng) for c in clips]
        self._still_one(clips, rng)
        alpha = self._alpha(rng)
        return _item(clips, _weights(2, alpha), [-1, -1])

    def _texture_item(self, rng: random.Random) -> dict[str, torch.Tensor]:
        layers = texture_layers(torch.Generator().manual_seed(rng.getrandbits(63)), self.spec.frames, self.spec.size)
        alpha = self._alpha(rng)
        return _item(list(from_model(layers)), _weights(2, alpha), [-1, -1])

    def _alpha(self, rng: random.Random) -> float:
        """The blend's weight: drawn from ``alpha_range`` when given, else ``alpha``."""
        return rng.uniform(*self.alpha_range) if self.alpha_range is not None else self.alpha

    def _still_one(self, clips: list[np.ndarray], rng: random.Random) -> None:
        """With the ``still_layer`` share, freeze one of ``clips`` (in place); no draw at 0: items as before."""
        if self.still_layer and not self.frozen and rng.random() < self.still_layer:
            j = rng.randrange(len(clips))
            clips[j] = _freeze(clips[j], rng)


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
