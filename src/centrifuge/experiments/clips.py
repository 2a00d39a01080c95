"""Evaluation clips and the pairs that are blended.

    Each evaluation video gives ``windows`` clips: evenly spaced windows of ``frames`` frames (a single window
    is the centre window ``centrifuge evaluate`` uses), shortest side resized to ``size``, centre crop. Two
    clips of the same video are never blended, except by the ``same-source`` experiment. Every blend uses
    alpha = 0.5 (Eq. 1).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..data import centre_crop, loop_clip, window_starts
from ..errors import CentrifugeError
from ..video import VideoError, check_video, read_video
from .settings import MIN_HELD_OUT_VIDEOS, Video

log = logging.getLogger("centrifuge")


@dataclass
class ClipSet:
    """Evaluation clips: ``frames`` ``uint8 [N, T, S, S, 3]``, each from ``videos[video[i]]`` at ``start[i]``."""

    frames: np.ndarray
    video: list[int]
    start: list[int]
    videos: list[Video]

    def __len__(self) -> int:
        return len(self.video)

    def name(self, i: int) -> str:
        return f"{self.videos[self.video[i]].path.name}@{self.start[i]}"

    def held_out(self, i: int) -> bool:
        return self.videos[self.video[i]].held_out

    def label(self, i: int) -> str | None:
        return self.videos[self.video[i]].label


def load_clip_set(videos: Sequence[Video], frames: int, size: int, windows: int) -> ClipSet:
    """Decode ``windows`` clips of each video (videos that fail to decode or are not videos, a one-frame file
    included, are skipped with a warning)."""
    clips, video_idx, starts, kept = [], [], [], []
    for v in videos:
        try:
            check_video(v.path)
            data = read_video(v.path, 0, None, size=size)
            if len(data) == 0:
                raise VideoError(f"no frames decoded from {v.path}")
        except VideoError as e:
            log.warning("skipping video that cannot be decoded: %s", e)
            continue
        if min(data.shape[1:3]) < size:
            raise CentrifugeError(f"{v.path} decodes smaller than {size} pixels")
        for start in window_starts(len(data), frames, windows):
            window = loop_clip(data[start:start + frames], frames)  # shorter than a clip: looped, as in training
            clips.append(np.ascontiguousarray(centre_crop(window, size)))
            video_idx.append(len(kept))
            starts.append(start)
        kept.append(v)
    if len({i for i in video_idx}) < 2:
        raise CentrifugeError("fewer than 2 evaluation videos could be decoded")
    return ClipSet(np.stack(clips), video_idx, starts, kept)


def frozen_clips(frames: np.ndarray) -> np.ndarray:
    """Table 3's frozen videos, deterministic: the middle frame of each clip repeated over time."""
    t = frames.shape[1] // 2
    return np.ascontiguousarray(np.broadcast_to(frames[:, t:t + 1], frames.shape))


def pair_kind_ok(cs: ClipSet, i: int, j: int, kind: str) -> bool:
    """Whether clips ``i, j`` form a pair of ``kind``: ``different`` (two videos), ``same-video`` (two windows of
    one video) or ``same-class`` (two videos with the same label)."""
    same_video = cs.video[i] == cs.video[j]
    if kind == "different":
        return not same_video
    if kind == "same-video":
        return same_video
    if kind == "same-class":
        return not same_video and cs.label(i) is not None and cs.label(i) == cs.label(j)
    raise ValueError(f"unknown pair kind {kind!r}")


def choose_clip_pairs(cs: ClipSet, max_pairs: int, seed: int, kind: str = "different") -> list[tuple[int, int]]:
    """Evaluation pairs of clips of ``kind`` under the held-out rule (module docstring); a seeded subset of
    ``max_pairs`` when there are more."""
    strict = sum(v.held_out for v in cs.videos) >= MIN_HELD_OUT_VIDEOS or all(v.held_out for v in cs.videos)
    pairs = []
    for i in range(len(cs)):
        for j in range(i + 1, len(cs)):
            held = (cs.held_out(i) and cs.held_out(j)) if strict else (cs.held_out(i) or cs.held_out(j))
            if held and pair_kind_ok(cs, i, j, kind):
                pairs.append((i, j))
    if len(pairs) > max_pairs:
        pairs = sorted(random.Random(f"experiment-pairs:{seed}:{kind}").sample(pairs, max_pairs))
    return pairs
