"""Photos become training video: a virtual camera over a still photo, with cut-outs moving across it.

Videos are scarce where photos are plentiful. A clip rendered from a photo has real image statistics and a
known, separate motion, so it can stand in for a video layer of a blend (Eq. 1), the way *Learning to See
Through Obstructions* (Liu et al., CVPR 2020) synthesises reflection-removal training data from photos.

One clip (``uint8 [T, H, W, 3]``, any T x H x W) is a pure function of ``(seed, index)``:

* **camera**: a homography per frame (centre, zoom, rotation, a little perspective) moving from one
  random pose to another over the clip — still, slow or fast — with optional hand-held jitter and motion
  blur (several sub-frame renders averaged over the shutter time);
* **objects**: cut-outs with alpha (RGBA images), or soft-edged crops of other photos when no cut-outs are
  given, each on its own path (entering, crossing or leaving the frame, scaled and rotated over time),
  composited in order so that they occlude one another;
* **light**: sometimes a slow drift of brightness and colour;
* **non-rigid motion and parallax** (off unless ``flow`` / ``parallax`` are set): a smooth random flow
  field that sways over the clip (water, foliage, cloth), and a photo split into a near and a far plane
  along a soft random boundary, the far one travelling a fraction of the camera's path.

Every trajectory is a function of continuous time, so motion blur is just rendering at fractional times.
All warps are one ``grid_sample`` over the frames of a clip.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .camera_flaws import camera_flaws
from .sources import walk_once

__all__ = ["IMAGE_EXTENSIONS", "SynthConfig", "PhotoLibrary", "PhotoSynth", "Path2D", "list_images", "camera_path",
           "object_path", "render", "render_layer", "soft_crop", "flow_field"]

log = logging.getLogger("centrifuge")

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True)
class SynthConfig:
    """Probabilities and ranges of the synthetic clips."""

    still: float = 0.15  # probability of a camera that does not move
    fast: float = 0.3  # probability of a fast camera (else slow), when it moves
    slow_speed: tuple[float, float] = (0.002, 0.015)  # camera travel per frame, in view widths
    fast_speed: tuple[float, float] = (0.015, 0.05)
    max_zoom_change: float = 0.3  # log-scale change of the zoom over a clip (fast cameras; half for slow)
    max_rotation: float = 8.0  # degrees at the start; the same again of change over the clip (fast)
    perspective: float = 0.15  # largest tilt (fraction of the view's half-size that shrinks at one edge)
    jitter: float = 0.5  # probability of hand-held jitter
    blur: float = 0.2  # probability of motion blur (moving clips)
    objects: tuple[float, ...] = (0.35, 0.3, 0.2, 0.15)  # probability of 0, 1, 2, 3... objects
    object_size: tuple[float, float] = (0.2, 0.6)  # object's longest side, as a fraction of the frame's
    photo_objects: float = 0.25  # probability that an object is a soft-edged photo crop when cut-outs exist
    light: float = 0.3  # probability of a brightness/colour drift
    flow: float = 0.0  # probability of non-rigid motion: a smooth flow field that sways over the clip
    flow_amplitude: tuple[float, float] = (0.005, 0.03)  # its largest displacement, in frame widths
    parallax: float = 0.0  # probability that the photo is split into a near and a far plane (moving cameras)
    camera: float = 0.0  # probability of a camera's flaws: flicker, sensor noise, compression (camera_flaws)
    oversample: float = 2.0  # photos are kept at shortest side oversample * max(H, W): warps stay sharp


def list_images(root: str | Path) -> list[Path]:
    """All image files under ``root`` (recursive, by extension, hidden files skipped, each folder once), sorted."""
    root = Path(root)
    if root.is_file():
        return [root] if root.suffix.lower() in IMAGE_EXTENSIONS else []
    if not root.is_dir():
        raise FileNotFoundError(f"no such directory: {root}")
    found = [Path(dirpath) / n for dirpath, names in walk_once(root, hidden_folders=False) for n in names
             if not n.startswith(".") and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
    return sorted(found)


class PhotoLibrary:
    """Images of some folders, decoded on demand (an LRU cache of ``cache`` images), unreadable ones skipped.

    Headers are checked when the library is built: files that are not images are skipped and counted
    (``skipped``), with one warning line. A file that fails later, when decoded in full (a truncated JPEG),
    is skipped too: :meth:`get` returns None for it from then on.
    """

    def __init__(self, roots: Sequence[str | Path], rgba: bool, what: str = "images", cache: int = 512):
        paths = [p for r in roots for p in list_images(r)]
        self.rgba, self.what = rgba, what
        self.paths: list[Path] = []
        self.skipped: list[Path] = []
        for p in paths:
            try:
                with Image.open(p) as im:
                    im.verify()
                self.paths.append(p)
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
                self.skipped.append(p)
        if self.skipped:
            log.warning("skipped %d unreadable %s of %d (e.g. %s)", len(self.skipped), what, len(paths),
                        self.skipped[0])
        self._cache: OrderedDict[tuple[int, int], torch.Tensor | None] = OrderedDict()
        self._cache_size = cache

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, index: int, short_side: int) -> torch.Tensor | None:
        """Image ``index`` as float ``[C, h, w]`` in [0, 1] (C = 4 with ``rgba``), shortest side at most
        ``short_side`` (never enlarged); None when it cannot be decoded."""
        key = (index, short_side)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        img = self._decode(self.paths[index], short_side)
        self._cache[key] = img
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return img

    def _decode(self, path: Path, short_side: int) -> torch.Tensor | None:
        try:
            with Image.open(path) as im:
                im = im.convert("RGBA" if self.rgba else "RGB")
                scale = short_side / min(im.size)
                if scale < 1:
                    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                                   Image.Resampling.LANCZOS)
                arr = np.asarray(im, dtype=np.uint8)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
            log.warning("skipping unreadable %s %s: %s", self.what[:-1], path, e)
            return None
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)


# --------------------------------------------------------------------------------------------------------
# trajectories: functions of continuous time t in [0, T - 1]


@dataclass
class Path2D:
    """A pose that moves over the clip: eased from ``start`` to ``end`` plus hand-held jitter."""

    start: np.ndarray  # [P] pose parameters at t = 0
    end: np.ndarray  # [P] at t = T - 1
    ease: bool
    jitter: np.ndarray  # [P, 3]: amplitude, frequency (cycles per frame), phase of one sinusoid per parameter

    def at(self, t: np.ndarray, frames: int) -> np.ndarray:
        """Poses ``[len(t), P]`` at times ``t``."""
        u = np.clip(t / max(frames - 1, 1), 0.0, 1.0)[:, None]
        if self.ease:
            u = u * u * (3 - 2 * u)
        amp, freq, phase = self.jitter[:, 0], self.jitter[:, 1], self.jitter[:, 2]
        return self.start + u * (self.end - self.start) + amp * np.sin(2 * np.pi * freq * t[:, None] + phase)


def _homographies(pose: np.ndarray, out_hw: tuple[int, int]) -> torch.Tensor:
    """Matrices ``[N, 3, 3]`` mapping centred output pixel coordinates to source pixel coordinates.

    ``pose`` is ``[N, 6]``: centre x and y (source pixels), zoom (source pixels per output pixel), rotation
    (radians) and tilt x and y (perspective: the view's scale changes by that fraction across half of it).
    """
    h, w = out_hw
    cx, cy, zoom, rot, tx, ty = (pose[:, i] for i in range(6))
    c, s = np.cos(rot) * zoom, np.sin(rot) * zoom
    m = np.zeros((len(pose), 3, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = c, -s, cx
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = s, c, cy
    m[:, 2, 0], m[:, 2, 1], m[:, 2, 2] = tx / (w / 2), ty / (h / 2), 1.0
    return torch.from_numpy(m).float()


def _sample(src: torch.Tensor, mats: torch.Tensor, out_hw: tuple[int, int], padding: str) -> torch.Tensor:
    """``src [C, h, w]`` warped by each of ``mats [N, 3, 3]``: ``[N, C, H, W]`` (bilinear)."""
    h, w = out_hw
    sh, sw = src.shape[-2:]
    xs = (torch.arange(w, dtype=torch.float32) + 0.5 - w / 2).view(1, 1, w)
    ys = (torch.arange(h, dtype=torch.float32) + 0.5 - h / 2).view(1, h, 1)
    m = mats.view(-1, 9, 1, 1).unbind(1)
    den = (m[6] * xs + m[7] * ys + m[8]).clamp(min=1e-3)
    gx = (m[0] * xs + m[1] * ys + m[2]) / den * (2 / sw) - 1
    gy = (m[3] * xs + m[4] * ys + m[5]) / den * (2 / sh) - 1
    grid = torch.stack([gx, gy], -1)  # [N, H, W, 2]
    return F.grid_sample(src.unsqueeze(0).expand(len(mats), -1, -1, -1), grid, mode="bilinear",
                         padding_mode=padding, align_corners=False)


# --------------------------------------------------------------------------------------------------------
# the camera, objects and light


def _jitter(rng: random.Random, scales: Sequence[float], on: bool) -> np.ndarray:
    return np.array([[rng.uniform(0.3, 1.0) * s if on else 0.0, rng.uniform(0.05, 0.3), rng.uniform(0, 2 * np.pi)]
                     for s in scales])


def camera_path(rng: random.Random, out_hw: tuple[int, int], src_hw: tuple[int, int], frames: int,
                cfg: SynthConfig) -> Path2D:
    """A random camera over a photo of ``src_hw`` that keeps the view inside it (up to jitter)."""
    h, w = out_hw
    sh, sw = src_hw
    still = rng.random() < cfg.still
    fast = not still and rng.random() < cfg.fast
    lo, hi = cfg.fast_speed if fast else cfg.slow_speed
    rot_range = math.radians(cfg.max_rotation)
    rot0 = rng.uniform(-rot_range, rot_range) * rng.random()
    rot1 = rot0 if still else rot0 + rng.uniform(-rot_range, rot_range) * (1.0 if fast else 0.3)
    rmax = max(abs(rot0), abs(rot1))
    # the largest zoom at which the rotated (and slightly tilted) view fits in the photo
    tilt = cfg.perspective
    ext_w = (w * math.cos(rmax) + h * math.sin(rmax)) * (1 + tilt)
    ext_h = (w * math.sin(rmax) + h * math.cos(rmax)) * (1 + tilt)
    zfit = min(sw / ext_w, sh / ext_h)
    zmin = min(0.5, zfit)
    z0 = math.exp(rng.uniform(math.log(zmin), math.log(zfit)))
    dz = 0.0 if still else rng.uniform(-1, 1) * cfg.max_zoom_change * (1.0 if fast else 0.5)
    z1 = min(max(z0 * math.exp(dz), zmin), zfit)
    zmax = max(z0, z1)
    hx, hy = ext_w * zmax / 2, ext_h * zmax / 2  # half-extent of the view in source pixels
    c0 = np.array([rng.uniform(hx, max(hx, sw - hx)), rng.uniform(hy, max(hy, sh - hy))])
    c1 = c0.copy()
    if not still:
        angle = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(lo, hi) * (frames - 1) * w * zmax
        c1 = c0 + dist * np.array([math.cos(angle), math.sin(angle)])
        c1 = np.clip(c1, [hx, hy], [max(hx, sw - hx), max(hy, sh - hy)])
    t0 = [rng.uniform(-tilt, tilt) * rng.random() for _ in range(2)]
    t1 = t0 if still else [a + rng.uniform(-tilt, tilt) * 0.5 for a in t0]
    t1 = [min(max(a, -tilt), tilt) for a in t1]
    shake = not still and rng.random() < cfg.jitter
    jit = _jitter(rng, [1.5 * z0, 1.5 * z0, 0.01 * z0, 0.005, 0.0, 0.0], shake)
    return Path2D(np.array([*c0, z0, rot0, *t0]), np.array([*c1, z1, rot1, *t1]), rng.random() < 0.5, jit)


def object_path(rng: random.Random, out_hw: tuple[int, int], obj_hw: tuple[int, int], frames: int,
                cfg: SynthConfig) -> Path2D:
    """A path of an object across the frame: it enters, crosses or leaves it, scaled and rotated over time."""
    h, w = out_hw
    oh, ow = obj_hw
    side = rng.uniform(*cfg.object_size) * max(h, w)
    zoom = max(oh, ow) / side  # object pixels per output pixel
    # positions in centred output coordinates; the object may start or end outside the frame
    reach = np.array([w / 2 + side / 2, h / 2 + side / 2])
    p0 = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1)]) * reach * rng.choice([0.6, 1.0])
    speed = rng.uniform(0.005, 0.04) * max(h, w) * rng.choice([0.3, 1.0, 1.5])
    angle = rng.uniform(0, 2 * np.pi)
    p1 = p0 + speed * (frames - 1) * np.array([math.cos(angle), math.sin(angle)])
    rot0 = rng.uniform(-0.5, 0.5)
    rot1 = rot0 + rng.uniform(-0.6, 0.6) * rng.random()
    z1 = zoom * math.exp(rng.uniform(-0.3, 0.3))
    return Path2D(np.array([*p0, zoom, rot0]), np.array([*p1, z1, rot1]), rng.random() < 0.3,
                  np.zeros((4, 3)))


def _object_mats(pose: np.ndarray, obj_hw: tuple[int, int]) -> torch.Tensor:
    """Output-to-object matrices for object poses ``[N, 4]`` (position, zoom, rotation)."""
    oh, ow = obj_hw
    x, y, zoom, rot = (pose[:, i] for i in range(4))
    c, s = np.cos(rot) * zoom, np.sin(rot) * zoom
    # object coordinate = zoom * R * (output - position) + object centre
    m = np.zeros((len(pose), 3, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    m[:, 0, 2] = -(c * x - s * y) + ow / 2
    m[:, 1, 2] = -(s * x + c * y) + oh / 2
    m[:, 2, 2] = 1.0
    return torch.from_numpy(m).float()


def soft_crop(photo: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """A random crop of an RGB photo with a soft-edged elliptical or rounded alpha: ``[4, h, w]``."""
    _, h, w = photo.shape
    ch, cw = round(h * rng.uniform(0.3, 0.7)), round(w * rng.uniform(0.3, 0.7))
    y, x = rng.randrange(h - ch + 1), rng.randrange(w - cw + 1)
    crop = photo[:, y:y + ch, x:x + cw]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, ch), torch.linspace(-1, 1, cw), indexing="ij")
    power = rng.choice([2.0, 4.0, 8.0])  # ellipse ... rounded rectangle
    r = (xx.abs() ** power + yy.abs() ** power) ** (1 / power)
    soft = rng.uniform(0.05, 0.3)
    alpha = ((1 - r) / soft).clamp(0, 1)
    return torch.cat([crop, alpha[None]], 0)


def _light(rng: random.Random, frames: int) -> torch.Tensor:
    """Per-frame RGB gains ``[frames, 3, 1, 1]``: a slow drift of brightness and colour."""
    g0 = np.array([rng.uniform(0.85, 1.15)] * 3) * np.array([rng.uniform(0.95, 1.05) for _ in range(3)])
    g1 = g0 * rng.uniform(0.8, 1.25) * np.array([rng.uniform(0.93, 1.07) for _ in range(3)])
    u = (np.arange(frames) / max(frames - 1, 1))[:, None]
    return torch.from_numpy(g0 + u * (g1 - g0)).float().view(-1, 3, 1, 1)


def _smooth_field(rng: random.Random, channels: int, out_hw: tuple[int, int], cells: int) -> torch.Tensor:
    """A smooth random field ``[channels, H, W]`` in about [-1, 1]: ``cells`` x ``cells`` noise, bicubic."""
    g = torch.Generator().manual_seed(rng.randrange(2**62))
    noise = torch.randn(1, channels, cells, cells, generator=g)
    return F.interpolate(noise, size=out_hw, mode="bicubic", align_corners=False)[0].clamp(-2.5, 2.5) / 2.5


def flow_field(rng: random.Random, frames: int, out_hw: tuple[int, int], cfg: SynthConfig) -> torch.Tensor:
    """Non-rigid motion: a sampling grid ``[frames, H, W, 2]`` (normalised, for ``grid_sample``) that displaces
    each pixel by a smooth field swaying between two random shapes, with a random period."""
    h, w = out_hw
    amp = rng.uniform(*cfg.flow_amplitude) * w
    a, b = (_smooth_field(rng, 2, out_hw, rng.choice([3, 4, 6])) for _ in range(2))
    freq, phase = rng.uniform(0.01, 0.12), rng.uniform(0, 2 * np.pi)
    t = torch.arange(frames, dtype=torch.float32).view(-1, 1, 1, 1) * (2 * np.pi * freq) + phase
    disp = amp * (a * torch.cos(t) + b * torch.sin(t))  # [T, 2, H, W] in pixels
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    gx = (xs + disp[:, 0]) * (2 / w) - 1
    gy = (ys + disp[:, 1]) * (2 / h) - 1
    return torch.stack([gx, gy], -1)


def _far_camera(camera: Path2D, rng: random.Random) -> Path2D:
    """The camera of a far plane: the same start, a fraction of the travel, the same shake."""
    f = rng.uniform(0.1, 0.6)
    return Path2D(camera.start, camera.start + f * (camera.end - camera.start), camera.ease, camera.jitter * f)


def _depth_mask(rng: random.Random, src_hw: tuple[int, int]) -> torch.Tensor:
    """A soft random near-plane mask ``[1, h, w]`` over the photo (1: near): a smooth field's level set."""
    h, w = src_hw
    field = _smooth_field(rng, 1, (max(h // 8, 4), max(w // 8, 4)), rng.choice([2, 3, 4]))
    ramp = torch.linspace(-1, 1, field.shape[-2]).view(1, -1, 1) * rng.uniform(-1, 1)  # often a horizon
    level = field + ramp + rng.uniform(-0.3, 0.3)
    mask = (level / rng.uniform(0.01, 0.06)).sigmoid()
    return F.interpolate(mask[None], size=(h, w), mode="bilinear", align_corners=False)[0]


def render_layer(background: torch.Tensor, objects: Sequence[torch.Tensor], frames: int, out_hw: tuple[int, int],
                 rng: random.Random, cfg: SynthConfig = SynthConfig()) -> np.ndarray:
    """One synthetic clip ``uint8 [frames, H, W, 3]``: a random camera over ``background`` (``[3, h, w]`` in
    [0, 1]) with ``objects`` (``[4, h, w]``, RGBA) on random paths, composited in order (later ones in front)."""
    cam = camera_path(rng, out_hw, tuple(background.shape[-2:]), frames, cfg)
    paths = [object_path(rng, out_hw, tuple(o.shape[-2:]), frames, cfg) for o in objects]
    moving = not np.allclose(cam.start, cam.end) or bool(objects)
    shutter = (-0.25, 0.0, 0.25) if moving and rng.random() < cfg.blur else (0.0,)
    gains = _light(rng, frames) if rng.random() < cfg.light else None
    # drawn after every draw above, so that clips with both probabilities at 0 are today's clips
    far = None
    if cfg.parallax and not np.allclose(cam.start, cam.end) and rng.random() < cfg.parallax:
        far = (_far_camera(cam, rng), _depth_mask(rng, tuple(background.shape[-2:])))
    flow = flow_field(rng, frames, out_hw, cfg) if cfg.flow and rng.random() < cfg.flow else None
    clip = render(background, cam, list(zip(objects, paths, strict=True)), frames, out_hw, shutter, gains,
                  far=far, flow=flow)
    if cfg.camera and rng.random() < cfg.camera:
        clip = camera_flaws(clip, rng)
    return clip


def render(background: torch.Tensor, camera: Path2D, objects: Sequence[tuple[torch.Tensor, Path2D]], frames: int,
           out_hw: tuple[int, int], shutter: Sequence[float] = (0.0,), gains: torch.Tensor | None = None,
           far: tuple[Path2D, torch.Tensor] | None = None, flow: torch.Tensor | None = None) -> np.ndarray:
    """Render given paths: the camera's poses (:func:`camera_path`) over ``background``, each object
    (``[4, h, w]``) on its path (:func:`object_path`), motion blur as the mean over the ``shutter`` offsets (in
    frames), then ``gains`` (``[frames, 3, 1, 1]``). ``far``: a far plane's camera and the near plane's mask
    over the photo (``[1, h, w]``); ``flow``: a non-rigid warp of every frame (:func:`flow_field`).
    Returns ``uint8 [frames, H, W, 3]``."""
    times = (np.arange(frames, dtype=float)[:, None] + np.array(shutter)[None]).reshape(-1)
    near = _homographies(camera.at(times, frames), out_hw)
    if far is None:
        x = _sample(background, near, out_hw, "reflection")
    else:
        both = _sample(torch.cat([background, far[1]]), near, out_hw, "reflection")
        behind = _sample(background, _homographies(far[0].at(times, frames), out_hw), out_hw, "reflection")
        a = both[:, 3:]
        x = both[:, :3] * a + behind * (1 - a)
    for obj, path in objects:
        o = _sample(obj, _object_mats(path.at(times, frames), obj.shape[-2:]), out_hw, "zeros")
        a = o[:, 3:]
        x = x * (1 - a) + o[:, :3] * a
    x = x.view(frames, len(shutter), 3, *out_hw).mean(1)
    if flow is not None:
        x = F.grid_sample(x, flow, mode="bilinear", padding_mode="reflection", align_corners=False)
    if gains is not None:
        x = x * gains
    return x.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


class PhotoSynth:
    """Synthetic training clips from a folder of photos (and optionally one of cut-outs with alpha).

    ``clip(index, frames, size)`` is a pure function of ``(seed, index, frames, size)``. Without cut-outs,
    objects are soft-edged crops of other photos. Raises ``ValueError`` when no readable photo is found.
    """

    def __init__(self, photos: Sequence[str | Path], cutouts: Sequence[str | Path] = (), seed: int = 0,
                 cfg: SynthConfig = SynthConfig()):
        self.photos = PhotoLibrary(photos, rgba=False, what="photos")
        self.cutouts = PhotoLibrary(cutouts, rgba=True, what="cut-outs") if cutouts else None
        if not len(self.photos):
            where = ", ".join(map(str, photos))
            raise ValueError(f"no readable images (JPEG, PNG, WebP...) in {where}")
        self.seed, self.cfg = seed, cfg

    def __len__(self) -> int:
        return len(self.photos)

    @property
    def skipped(self) -> list[Path]:
        """Files that are not readable images (skipped)."""
        return self.photos.skipped + (self.cutouts.skipped if self.cutouts else [])

    def photo_index(self, rng: random.Random) -> int:
        """A random photo, for :meth:`clip`'s ``photo`` (one that cannot be decoded is replaced there)."""
        return rng.randrange(len(self.photos))

    def _photo(self, rng: random.Random, short_side: int, index: int | None = None) -> torch.Tensor:
        if index is not None:
            img = self.photos.get(index, short_side)
            if img is not None:
                return img
        for _ in range(len(self.photos)):
            img = self.photos.get(rng.randrange(len(self.photos)), short_side)
            if img is not None:
                return img
        raise ValueError("none of the photos can be decoded")

    def _object(self, rng: random.Random, short_side: int) -> torch.Tensor:
        lib = self.cutouts
        if lib is not None and len(lib) and rng.random() >= self.cfg.photo_objects:
            img = lib.get(rng.randrange(len(lib)), short_side)
            if img is not None:
                return img
        return soft_crop(self._photo(rng, short_side), rng)

    def clip(self, index: int, frames: int, size: int | tuple[int, int], rng: random.Random | None = None,
             photo: int | None = None) -> np.ndarray:
        """Clip ``index``: ``uint8 [frames, H, W, 3]`` (``size``: an int for a square, or ``(H, W)``); its
        background is photo ``photo`` when given (two clips of one photo differ only in camera and objects)."""
        h, w = (size, size) if isinstance(size, int) else size
        rng = rng or random.Random(f"synth:{self.seed}:{index}")
        short = round(self.cfg.oversample * max(h, w))
        background = self._photo(rng, short, photo)
        weights = self.cfg.objects
        n = rng.choices(range(len(weights)), weights=weights)[0]
        objects = [self._object(rng, short) for _ in range(n)]
        return render_layer(background, objects, frames, (h, w), rng, self.cfg)
