"""Reading video with PyAV (FFmpeg): what a video is, probing, windowed reading and streaming (writing:
:mod:`centrifuge.video_writer`).

Frames are ``numpy.uint8`` arrays ``[T, H, W, 3]`` in RGB, upright (the container's display rotation is
applied). Every failure in the public functions is raised as :class:`VideoError` with a message meant for
users; raw PyAV exceptions never leak out.

What a video is (decided here only, docs/reliability.md): FFmpeg opens far more than videos. It renders a
plain text file as frames of a terminal (its ``tty`` demuxer) and reads a PNG or JPEG as a one-frame stream
(its image demuxers, ``png_pipe``, ``image2``...). Every reader here refuses, with :class:`NotAVideoError`,
a file FFmpeg opens with a text or still-image demuxer and a file without a moving video stream (audio only,
subtitles, a cover picture). :func:`check_video` also refuses fewer than :data:`MIN_FRAMES` decodable frames
and a stream without a frame rate; the commands call it on each input before any work.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

from .errors import CentrifugeError, VideoError

__all__ = ["VideoError", "NotAVideoError", "VideoInfo", "MIN_FRAMES", "check_video", "probe", "read_video",
           "iter_frames"]

DEFAULT_FPS = 25.0

#: A moving picture has at least this many frames: one frame is a still image, whatever its container.
MIN_FRAMES = 2

# FFmpeg demuxers that turn text into frames: a terminal rendering of the file's characters.
_TEXT_DEMUXERS = frozenset({"tty", "bin", "xbin", "adf", "idf"})
_TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})
# Still-image demuxers besides the "*_pipe" family (png_pipe, jpeg_pipe, webp_pipe...). image2 also reads
# numbered sequences (frame%04d.png): refused too, as they carry no frame rate (FFmpeg assumes 25).
_IMAGE_DEMUXERS = frozenset({"image2", "image2pipe", "alias_pix", "brender_pix", "fits", "txd"})
# A video stream that is a picture, not a moving one: cover art of audio files, HEIF-style stills.
_STILL_DISPOSITIONS = av.stream.Disposition.attached_pic | av.stream.Disposition.still_image

# Errors PyAV raises for unreadable/unwritable media. av's FFmpegError subclasses mix in OSError types,
# and plain OSError covers permission problems and the like raised before FFmpeg is involved.
_AV_ERRORS: tuple[type[BaseException], ...] = (av.error.FFmpegError, OSError)


class NotAVideoError(VideoError, CentrifugeError):
    """The file is not a moving picture: text, a still image, subtitles, audio only, fewer than
    :data:`MIN_FRAMES` frames or no frame rate. A user error (one line, exit status 2), and a
    :class:`VideoError`, so code that skips undecodable videos skips these too."""


@dataclass(frozen=True)
class VideoInfo:
    """Basic facts about a video file, as returned by :func:`probe`.

    ``width``/``height`` are those of the upright frames (after ``rotation``). ``rotation`` is the
    counter-clockwise angle in degrees (0, 90, 180 or 270) that :func:`read_video` rotates decoded frames by.
    ``num_frames`` is exact when the container stores a frame count (MP4/MOV do) and otherwise an
    estimate ``round(duration * fps)`` (MKV/WebM, some AVI).
    """

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    rotation: int
    duration: float
    container: str = ""  # FFmpeg's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "gif"
    codec: str = ""  # the video stream's codec, e.g. "h264"


# --------------------------------------------------------------------------------------------------------
# reading


def _open_input(path: str | os.PathLike[str]) -> av.container.InputContainer:
    p = Path(path)
    if not p.exists():
        raise VideoError(f"no such file: {p}")
    if p.is_dir():
        raise NotAVideoError(f"is a directory, not a video: {p}")
    if p.is_file() and p.stat().st_size == 0:
        raise NotAVideoError(f"not a video: {p} is empty")
    try:
        return av.open(str(p), mode="r")
    except av.error.InvalidDataError as e:
        raise NotAVideoError(f"not a video (cannot be decoded by FFmpeg): {p}") from e
    except _AV_ERRORS as e:
        raise VideoError(f"cannot open {p}: {e}") from e


def _refuse_non_video(container: av.container.InputContainer, path: str | os.PathLike[str]) -> None:
    """Raise :class:`NotAVideoError` for a file FFmpeg opened with a text or still-image demuxer."""
    name = container.format.name
    if name in _TEXT_DEMUXERS or any(s.codec_context and s.codec_context.name in _TEXT_CODECS
                                     for s in container.streams.video):
        raise NotAVideoError(f"not a video: {path} is text (FFmpeg would draw its characters as frames)")
    if name in _IMAGE_DEMUXERS or name.endswith("_pipe"):
        kind = name.removesuffix("_pipe").upper() if name.endswith("_pipe") else "an image"
        hint = " (FFmpeg cannot decode animated WebP: convert it to MP4 or GIF)" if name == "webp_pipe" else ""
        raise NotAVideoError(f"not a video: {path} is a still image ({kind}){hint}; a video has at least "
                             f"{MIN_FRAMES} frames (to use an image sequence, encode it as a video first)")


def _no_video_stream(container: av.container.InputContainer, path: str | os.PathLike[str]) -> NotAVideoError:
    """The error for a file without a moving video stream, saying what it holds instead."""
    types = {s.type for s in container.streams}
    if container.streams.video:
        what = "holds only a still picture (cover art), no video stream"
    elif "audio" in types:
        what = "holds only audio, no video stream"
    elif "subtitle" in types:
        what = "holds subtitles, no video stream"
    else:
        what = "has no video stream"
    return NotAVideoError(f"not a video: {path} {what}")


def _video_stream(container: av.container.InputContainer, path: str | os.PathLike[str]) -> av.VideoStream:
    """The first moving video stream, after refusing files that are not videos (see the module docstring)."""
    _refuse_non_video(container, path)
    moving = [s for s in container.streams.video if not s.disposition & _STILL_DISPOSITIONS]
    if not moving:
        raise _no_video_stream(container, path)
    stream = moving[0]
    if stream.codec_context is None:
        raise VideoError(f"no decoder for the video stream ({stream.name}) in {path}")
    # Frame threading is much faster for H.264/HEVC than the default slice threading.
    stream.thread_type = "AUTO"
    return stream


def _stream_rate(stream: av.VideoStream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate is not None and rate > 0:
            return Fraction(rate)
    return Fraction(DEFAULT_FPS)


def _normalise_rotation(degrees: float) -> int:
    """Counter-clockwise degrees snapped to a multiple of 90 in [0, 360)."""
    return int(round(degrees / 90.0)) % 4 * 90


def _metadata_rotation(stream: av.VideoStream) -> int | None:
    # Older FFmpeg builds export the display matrix as a clockwise "rotate" tag.
    tag = stream.metadata.get("rotate")
    if tag is None:
        return None
    try:
        return _normalise_rotation(-float(tag))
    except ValueError:
        return None


def _frame_rotation(frame: av.VideoFrame, fallback: int | None) -> int:
    rotation = frame.rotation  # counter-clockwise, from the DISPLAYMATRIX side data
    if rotation:
        return _normalise_rotation(rotation)
    return fallback or 0


def _target_size(width: int, height: int, size: int | None) -> tuple[int, int]:
    """(width, height) with the shortest side scaled to ``size``, aspect kept."""
    if size is None:
        return width, height
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    scale = size / min(width, height)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    # Pin the short side exactly; rounding could otherwise leave it off by one on square-ish inputs.
    if width <= height:
        w = size
    else:
        h = size
    return w, h


class _Converter:
    """Turns decoded frames into upright RGB arrays of the requested size."""

    def __init__(self, width: int, height: int, rotation: int, size: int | None):
        self.rotation = rotation
        swap = rotation in (90, 270)
        up_w, up_h = (height, width) if swap else (width, height)
        self.out_w, self.out_h = _target_size(up_w, up_h, size)
        # The scaler works on the stored (unrotated) frame, so swap the target back.
        self.scale_w, self.scale_h = (self.out_h, self.out_w) if swap else (self.out_w, self.out_h)
        downscale = self.scale_w * self.scale_h < width * height
        self.interpolation = "AREA" if downscale else "BILINEAR"
        # One reformatter for the whole stream: it keeps its scaler between frames, where frame.reformat and
        # to_ndarray build a new one per frame (1.4-2.3x slower per read, docs/performance.md).
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if (frame.width, frame.height) == (self.scale_w, self.scale_h):
            rgb = self._reformatter.reformat(frame, format="rgb24").to_ndarray()
        else:
            rgb = self._reformatter.reformat(
                frame, width=self.scale_w, height=self.scale_h, format="rgb24", interpolation=self.interpolation
            ).to_ndarray()
        if self.rotation:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=self.rotation // 90))
        return rgb


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Read the header (and decode the first frames, for rotation and to check decodability).

    ``num_frames`` is an estimate from duration and frame rate when the container has no frame count.
    Refuses text, still-image, audio and subtitle files (:class:`NotAVideoError`) but, unlike
    :func:`check_video`, not a one-frame video.
    """
    return _probe(path)[0]


def check_video(path: str | os.PathLike[str]) -> VideoInfo:
    """What a video is, for every command and the web page: :func:`probe`'s facts about ``path``, or
    :class:`NotAVideoError` (a one-line user error) when it is not a moving picture.

    Refused: a missing file or a folder; anything FFmpeg cannot open; plain text (FFmpeg's ``tty`` demuxer);
    a still image (PNG, JPEG, WebP... and image sequences; FFmpeg's image demuxers); subtitles, audio only or
    a cover picture (no moving video stream); fewer than :data:`MIN_FRAMES` decodable frames (a one-frame
    video or GIF is a still image); a stream without a frame rate. Accepted: any video FFmpeg decodes,
    animated GIF and APNG included (their frame delays give the rate). Costs one open and two decoded frames.
    """
    info, decoded, has_rate = _probe(path)
    if decoded < MIN_FRAMES:
        raise NotAVideoError(f"not a video: {path} has only {decoded} frame (a still image); a video has at "
                             f"least {MIN_FRAMES}")
    if not has_rate:
        raise NotAVideoError(f"not a video: {path} has no frame rate")
    return info


def _probe(path: str | os.PathLike[str]) -> tuple[VideoInfo, int, bool]:
    """(facts, frames decoded up to :data:`MIN_FRAMES`, whether the stream states a frame rate)."""
    container = _open_input(path)
    try:
        stream = _video_stream(container, path)
        has_rate = any(r is not None and r > 0 for r in (stream.average_rate, stream.guessed_rate))
        fps = float(_stream_rate(stream))
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        num_frames = stream.frames if stream.frames and stream.frames > 0 else round(duration * fps)

        first = list(itertools.islice(container.decode(stream), MIN_FRAMES))
        if not first:
            raise VideoError(f"no decodable frames in {path}")
        rotation = _frame_rotation(first[0], _metadata_rotation(stream))
        width, height = first[0].width, first[0].height
        if rotation in (90, 270):
            width, height = height, width
        if duration <= 0 and num_frames > 0:
            duration = num_frames / fps
        info = VideoInfo(path=str(path), num_frames=max(int(num_frames), len(first)), fps=fps, width=width,
                         height=height, rotation=rotation, duration=duration, container=container.format.name,
                         codec=stream.codec_context.name)
        return info, len(first), has_rate
    except _AV_ERRORS as e:
        raise VideoError(f"cannot read {path}: {e}") from e
    finally:
        container.close()


def _decode_from(path: str | os.PathLike[str], start: int, size: int | None) -> Iterator[np.ndarray]:
    """Upright RGB frames with index >= ``start``, seeking when the container allows it.

    Frame indices count decoded frames from the beginning of the stream. After a seek the index of the
    first decoded frame is recovered from its timestamp (``pts * time_base * fps``) and counted on from
    there, so the result is identical to decoding from the start for constant-frame-rate video.
    """
    try_seek = start > 0
    while True:
        container = _open_input(path)
        try:
            stream = _video_stream(container, path)
            rate = _stream_rate(stream)
            time_base = stream.time_base
            origin = stream.start_time or 0
            seeked = False
            if try_seek and time_base:
                # Aim half a frame early so rounding never lands us after the wanted frame.
                target_s = max(Fraction(0), (start - Fraction(1, 2)) / rate)
                try:
                    container.seek(origin + int(target_s / time_base), stream=stream, backward=True)
                    seeked = True
                except _AV_ERRORS:
                    try_seek = False
                    continue  # reopen: a failed seek may leave the demuxer anywhere

            convert: _Converter | None = None
            index = -1
            fallback_rotation = _metadata_rotation(stream)
            restart = False
            for frame in container.decode(stream):
                if index < 0 and seeked:
                    if frame.pts is None:
                        restart = True
                        break
                    index = round((frame.pts - origin) * time_base * rate)
                    if index > start:  # overshot: the index is unreliable here
                        restart = True
                        break
                else:
                    index += 1
                if index < start:
                    continue  # decoded only to reach the wanted frame; skip the RGB conversion
                if convert is None:
                    convert = _Converter(
                        frame.width, frame.height, _frame_rotation(frame, fallback_rotation), size
                    )
                yield convert(frame)
            if restart:
                try_seek = False
                continue
            return
        except _AV_ERRORS as e:
            raise VideoError(f"cannot decode {path}: {e}") from e
        finally:
            container.close()


def _empty(path: str | os.PathLike[str], size: int | None) -> np.ndarray:
    info = probe(path)
    w, h = _target_size(info.width, info.height, size)
    return np.zeros((0, h, w, 3), dtype=np.uint8)


def read_video(
    path: str | os.PathLike[str], start: int = 0, num_frames: int | None = None, size: int | None = None
) -> np.ndarray:
    """Frames ``[start, start + num_frames)`` (all remaining when ``num_frames`` is None).

    Args:
        path: video file.
        start: index of the first frame (0-based).
        num_frames: how many frames; fewer are returned when the video ends first.
        size: if given, frames are resized so their shortest side is ``size`` (aspect kept).

    Returns:
        ``uint8 [T, H, W, 3]`` RGB, upright.
    """
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if num_frames is not None and num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if num_frames == 0:
        return _empty(path, size)
    frames: list[np.ndarray] = []
    gen = _decode_from(path, start, size)
    try:
        for frame in gen:
            frames.append(frame)
            if num_frames is not None and len(frames) >= num_frames:
                break
    finally:
        gen.close()
    if not frames:
        if start == 0:
            raise VideoError(f"no decodable frames in {path}")
        return _empty(path, size)
    return np.stack(frames)


def iter_frames(
    path: str | os.PathLike[str], size: int | None = None, batch: int = 1
) -> Iterator[np.ndarray]:
    """Stream a video as ``uint8 [b, H, W, 3]`` batches (``b <= batch``; only the last may be shorter).

    Memory use does not depend on the video's length.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    gen = _decode_from(path, 0, size)
    buf: list[np.ndarray] = []
    produced = False
    try:
        for frame in gen:
            buf.append(frame)
            if len(buf) == batch:
                produced = True
                yield np.stack(buf)
                buf = []
        if buf:
            produced = True
            yield np.stack(buf)
        if not produced:
            raise VideoError(f"no decodable frames in {path}")
    finally:
        gen.close()
