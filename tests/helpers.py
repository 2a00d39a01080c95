"""Tiny synthetic videos for tests (import with ``from helpers import make_video``)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from centrifuge.model import ModelConfig, build_model

# Mixed_3c keeps the network (and its export) small; strides 2 x 8 x 8 still leave odd sizes to pad.
TINY = dict(n_layers=2, width=0.125, decoder_width=0.25, final_endpoint="Mixed_3c")


def make_frames(
    frames: int = 16, width: int = 64, height: int = 48, seed: int = 0, pattern: str = "moving"
) -> np.ndarray:
    """``uint8 [frames, height, width, 3]`` test content.

    ``pattern``: ``"moving"`` (a seed-coloured gradient with a bright square moving right/down one step per
    frame, so every frame differs), ``"static"`` (the first moving frame repeated) or ``"noise"``.
    """
    rng = np.random.default_rng(seed)
    if pattern == "noise":
        return rng.integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)
    if pattern not in ("moving", "static"):
        raise ValueError(f"unknown pattern {pattern!r}")
    base_colour = rng.integers(40, 200, size=3)
    yy, xx = np.mgrid[0:height, 0:width]
    gradient = (xx / max(width - 1, 1) * 0.5 + yy / max(height - 1, 1) * 0.5)[..., None]
    base = (gradient * base_colour).astype(np.float64)
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    side = max(4, min(width, height) // 4)
    for t in range(frames):
        step = 0 if pattern == "static" else t
        img = base.copy()
        x0 = (2 * step) % max(width - side, 1)
        y0 = step % max(height - side, 1)
        img[y0 : y0 + side, x0 : x0 + side] = (255, 255 - 8 * (seed % 8), 64)
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def make_video(
    path: str | Path,
    frames: int = 16,
    width: int = 64,
    height: int = 48,
    fps: float | Fraction = 25,
    seed: int = 0,
    pattern: str = "moving",
    gop: int | None = None,
    rotation: int = 0,
) -> np.ndarray:
    """Write a tiny H.264 video (near-lossless, ``crf=1``) and return the frames that went in.

    ``gop`` sets the keyframe interval (so seeking can be exercised); ``rotation`` stores a
    counter-clockwise display rotation in the container (the pixels are written unrotated).
    """
    data = make_frames(frames, width, height, seed, pattern)
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
    options = {"crf": "1", "preset": "ultrafast"}
    if gop is not None:
        options.update({"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"})
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for i, rgb in enumerate(data):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return data


def make_audio_only(path: str | Path, seconds: float = 0.5, sample_rate: int = 16000) -> None:
    """Write a file with a single AAC audio stream and no video."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=sample_rate)
        stream.layout = "mono"
        n = int(seconds * sample_rate)
        t = np.arange(n) / sample_rate
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        frame_size = 1024
        for i in range(0, n, frame_size):
            frame = av.AudioFrame.from_ndarray(samples[:, i : i + frame_size], format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def broken_compile(fn, **kwargs):
    """Stands in for ``torch.compile`` where compiling is not possible: the compiled function raises."""
    def call(*args):
        raise RuntimeError("no compiler here")
    return call


def make_not_videos(root: str | Path) -> dict[str, Path]:
    """Tiny files FFmpeg opens that are not moving pictures, by kind: text (read by FFmpeg's tty demuxer),
    PNG and JPEG stills, a one-frame H.264 video, a one-frame GIF, audio only and subtitles."""
    from PIL import Image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    frame = make_frames(1, 32, 32)[0]
    files = {kind: root / name for kind, name in [
        ("text", "notes.txt"), ("png", "still.png"), ("jpeg", "still.jpg"), ("one-frame video", "one.mp4"),
        ("one-frame gif", "one.gif"), ("audio", "audio.m4a"), ("subtitles", "subs.srt")]}
    files["text"].write_text("Notes on the clips to separate.\n" * 60)  # long enough for FFmpeg's text probe
    Image.fromarray(frame).save(files["png"])
    Image.fromarray(frame).save(files["jpeg"])
    Image.fromarray(frame).save(files["one-frame gif"])
    make_video(files["one-frame video"], frames=1, width=32, height=32)
    make_audio_only(files["audio"])
    files["subtitles"].write_text("1\n00:00:01,000 --> 00:00:02,000\nHello\n\n2\n00:00:03,000 --> 00:00:04,000\nBye\n")
    return files


def make_gif(path: str | Path, frames: int = 4, width: int = 32, height: int = 32) -> None:
    """An animated GIF of ``make_frames`` content at 25 frames/s."""
    from PIL import Image

    images = [Image.fromarray(f) for f in make_frames(frames, width, height)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=40, loop=0)


def tiny_model(corrector: bool = False, residual: bool = True, seed: int = 0) -> torch.nn.Module:
    """A :data:`TINY` model whose BatchNorm statistics and head are not the initial ones (folding must matter)."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(**TINY, residual=residual, corrector=corrector))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
        elif isinstance(m, torch.nn.Conv3d) and m.kernel_size == (1, 1, 1) and m.bias is not None:
            m.weight.data.normal_(0, 0.2)  # the heads: initialised near zero, which would hide differences
    return model.eval()


def blends_with_and_without(videos: list[Path], option: str) -> list[tuple[dict, dict]]:
    """Items of a small :class:`~centrifuge.data.BlendDataset` as ``(plain, changed)`` pairs: ``option`` (a
    share of the blends) at 1 against the default. Checks on the way that the option at 0 leaves every item as
    the default makes it, and that an item with the option is still a pure function of its index."""
    from centrifuge.data import BlendDataset, ClipSpec

    spec = ClipSpec(frames=4, size=16, train=True)
    plain, off, on = (BlendDataset(videos, spec, seed=2, length=4, **kw) for kw in ({}, {option: 0.0}, {option: 1.0}))
    items = []
    for i in range(4):
        a, b, c = plain[i], off[i], on[i]
        assert torch.equal(a["mix"], b["mix"]) and torch.equal(a["layers"], b["layers"])
        assert torch.equal(on[i]["mix"], c["mix"])
        items.append((a, c))
    return items
