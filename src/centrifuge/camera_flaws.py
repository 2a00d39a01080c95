"""What a real camera adds to a clip rendered from a photo: flicker, sensor noise and lossy compression.

Real training and evaluation clips come out of cameras and video encoders; clips rendered from photos are clean.
:func:`camera_flaws` gives a rendered clip the three flaws every real clip has in some measure, each of a
strength drawn per clip, so that a model trained on photos does not meet them for the first time on real video.
"""

from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image

FLICKER = (0.0, 0.03)  # standard deviation of a frame's brightness gain (mains lights, auto exposure)
NOISE = (0.002, 0.04)  # standard deviation of the sensor noise at mid-grey, in [0, 1] units, at capture size
QUALITY = (25, 90)  # JPEG quality of each frame: block transform and 4:2:0 chroma, as video codecs do
CAPTURE_SCALE = 2  # real clips are captured and compressed larger than they are trained on, then downscaled


def camera_flaws(clip: np.ndarray, rng: random.Random) -> np.ndarray:
    """``clip`` (``uint8 [T, H, W, 3]``) with flicker, sensor noise and compression of random strengths.

    Each frame is enlarged to :data:`CAPTURE_SCALE` times its size, given noise (shot and read noise together:
    its variance grows with brightness) and encoded as a JPEG at one quality for the clip, then brought back to
    its size by area averaging, as a real clip is downscaled for training. Returns a new array; ``clip`` is not
    modified.
    """
    gen = np.random.default_rng(rng.randrange(2**63))
    t, h, w = clip.shape[:3]
    flicker, sigma, quality = rng.uniform(*FLICKER), rng.uniform(*NOISE), rng.randint(*QUALITY)
    gains = 1 + flicker * gen.standard_normal(t)
    out = np.empty_like(clip)
    for i, frame in enumerate(clip):
        big = Image.fromarray(frame).resize((w * CAPTURE_SCALE, h * CAPTURE_SCALE), Image.Resampling.BICUBIC)
        x = np.asarray(big, dtype=np.float32) / 255 * gains[i]
        x += gen.standard_normal(x.shape, dtype=np.float32) * (sigma * np.sqrt((x.clip(0, 1) + 0.1) / 0.6))
        captured = _jpeg(Image.fromarray((x * 255 + 0.5).clip(0, 255).astype(np.uint8)), quality)
        out[i] = np.asarray(captured.resize((w, h), Image.Resampling.BOX))
    return out


def _jpeg(frame: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    frame.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as img:
        return img.convert("RGB")
