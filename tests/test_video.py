from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import make_audio_only, make_gif, make_not_videos, make_video

from centrifuge.errors import CentrifugeError
from centrifuge.video import NotAVideoError, VideoError, check_video, iter_frames, probe, read_video
from centrifuge.video_writer import VideoWriter, write_video


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """60 frames with a keyframe every 10, so windowed reads really seek."""
    path = tmp_path_factory.mktemp("video") / "long.mp4"
    data = make_video(path, frames=60, gop=10)
    return path, data


def test_roundtrip_shape_and_count(tmp_path):
    data = make_video(tmp_path / "v.mp4", frames=16, width=64, height=48)
    info = probe(tmp_path / "v.mp4")
    assert (info.num_frames, info.width, info.height, info.rotation) == (16, 64, 48, 0)
    assert info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(16 / 25, abs=0.05)
    frames = read_video(tmp_path / "v.mp4")
    assert frames.dtype == np.uint8 and frames.shape == (16, 48, 64, 3)
    assert np.abs(frames.astype(int) - data).mean() < 4  # near-lossless encode


def test_write_read_roundtrip(tmp_path):
    data = make_video(tmp_path / "src.mp4", frames=8)
    write_video(tmp_path / "out.mp4", data, fps=25, crf=0)
    back = read_video(tmp_path / "out.mp4")
    assert back.shape == data.shape
    assert np.abs(back.astype(int) - data).mean() < 4


def test_window_equals_slice(long_video):
    path, _ = long_video
    full = read_video(path)
    assert len(full) == 60
    for start, n in [(0, 5), (1, 8), (23, 10), (45, 10), (55, 10)]:
        window = read_video(path, start, n)
        np.testing.assert_array_equal(window, full[start : start + n])
    assert read_video(path, 58, 10).shape[0] == 2  # runs off the end: what there is
    assert read_video(path, 100, 4).shape == (0, 48, 64, 3)


def test_size_resizes_shortest_side(long_video):
    path, _ = long_video
    assert read_video(path, 0, 3, size=24).shape == (3, 24, 32, 3)
    assert read_video(path, 0, 3, size=100).shape == (3, 100, 133, 3)  # upscaling too, 64*100/48=133.3


def test_iter_frames_batches(long_video):
    path, _ = long_video
    batches = list(iter_frames(path, size=24, batch=25))
    assert [b.shape[0] for b in batches] == [25, 25, 10]
    assert all(b.shape[1:] == (24, 32, 3) and b.dtype == np.uint8 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), read_video(path, size=24))


def test_rotation_applied(tmp_path):
    make_video(tmp_path / "rot.mp4", frames=4, width=64, height=48, rotation=90)
    info = probe(tmp_path / "rot.mp4")
    assert (info.rotation, info.width, info.height) == (90, 48, 64)
    frames = read_video(tmp_path / "rot.mp4")
    assert frames.shape == (4, 64, 48, 3)
    unrotated = make_video(tmp_path / "plain.mp4", frames=4, width=64, height=48)
    # Counter-clockwise by 90 degrees, as FFmpeg's own autorotation does.
    assert np.abs(frames.astype(int) - np.rot90(unrotated, k=1, axes=(1, 2))).mean() < 4


def test_odd_sizes(tmp_path):
    smooth = np.repeat(np.linspace(0, 255, 63, dtype=np.uint8)[None, None, :, None], 47, axis=1)
    data = np.broadcast_to(smooth, (4, 47, 63, 3)).copy()
    write_video(tmp_path / "odd.mp4", data, fps=25)
    back = read_video(tmp_path / "odd.mp4")
    # yuv420p needs even sizes: padded by one, content intact.
    assert back.shape == (4, 48, 64, 3)
    assert np.abs(back[:, :47, :63].astype(int) - data).mean() < 4
    with VideoWriter(tmp_path / "odd444.mp4", 25, 63, 47, pix_fmt="yuv444p") as w:
        w.write(data)
    assert read_video(tmp_path / "odd444.mp4").shape == (4, 47, 63, 3)


def test_fractional_fps(tmp_path):
    data = make_video(tmp_path / "src.mp4", frames=6)
    write_video(tmp_path / "ntsc.mp4", data, fps=30000 / 1001)
    assert probe(tmp_path / "ntsc.mp4").fps == pytest.approx(29.97, abs=1e-3)
    write_video(tmp_path / "f.mp4", data, fps=12.5)
    assert probe(tmp_path / "f.mp4").fps == pytest.approx(12.5, abs=1e-3)


def test_errors(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        probe(tmp_path / "missing.mp4")
    with pytest.raises(VideoError, match="no such file"):
        read_video(tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(VideoError, match="not a video"):
        probe(text)
    with pytest.raises(VideoError, match="not a video"):
        read_video(text)
    with pytest.raises(VideoError, match="not a video"):
        next(iter_frames(text))
    make_audio_only(tmp_path / "audio.m4a")
    with pytest.raises(VideoError, match="no video stream"):
        probe(tmp_path / "audio.m4a")
    with pytest.raises(VideoError, match="no video stream"):
        read_video(tmp_path / "audio.m4a")


def test_atomic_writer(tmp_path):
    out = tmp_path / "out.mp4"
    data = make_video(tmp_path / "src.mp4", frames=4)
    with pytest.raises(RuntimeError), VideoWriter(out, 25, 64, 48) as w:
        w.write(data)
        assert not out.exists()  # only the temporary file exists while writing
        raise RuntimeError("boom")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.mp4"]

    with VideoWriter(out, 25, 64, 48) as w:
        w.write(data[0])  # a single [H, W, 3] frame
        w.write(data[1:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "src.mp4"]
    assert probe(out).num_frames == 4


def test_writer_rejects_bad_frames(tmp_path):
    with VideoWriter(tmp_path / "x.mp4", 25, 64, 48) as w:
        with pytest.raises(ValueError):
            w.write(np.zeros((2, 48, 64, 3), dtype=np.float32))
        with pytest.raises(ValueError):
            w.write(np.zeros((2, 40, 64, 3), dtype=np.uint8))
        w.write(np.zeros((2, 48, 64, 3), dtype=np.uint8))
    assert probe(tmp_path / "x.mp4").num_frames == 2


# ---- what a video is (check_video): the one decision every command and the web page use

_NOT_VIDEO_WORDS = {"text": "is text", "png": "still image (PNG)", "jpeg": "still image (JPEG)",
                    "one-frame video": "only 1 frame", "one-frame gif": "only 1 frame",
                    "audio": "only audio", "subtitles": "subtitles"}


@pytest.fixture(scope="module")
def not_videos(tmp_path_factory):
    return make_not_videos(tmp_path_factory.mktemp("not_videos"))


@pytest.mark.parametrize("kind", sorted(_NOT_VIDEO_WORDS))
def test_check_video_refuses_what_is_not_a_moving_picture(not_videos, kind):
    with pytest.raises(NotAVideoError, match=re.escape(_NOT_VIDEO_WORDS[kind])) as caught:
        check_video(not_videos[kind])
    assert isinstance(caught.value, CentrifugeError) and isinstance(caught.value, VideoError)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("kind", ["text", "png", "audio", "subtitles"])
def test_every_reader_refuses_files_that_are_not_videos(not_videos, kind):
    for read in (probe, read_video, lambda p: next(iter_frames(p))):
        with pytest.raises(NotAVideoError):
            read(not_videos[kind])


def test_check_video_refuses_empty_files_folders_and_image_sequences(tmp_path):
    (tmp_path / "empty.mp4").touch()
    with pytest.raises(NotAVideoError, match="is empty"):
        check_video(tmp_path / "empty.mp4")
    with pytest.raises(NotAVideoError, match="directory"):
        check_video(tmp_path)
    # a file FFmpeg would read as a numbered image sequence (its image2 demuxer)
    from PIL import Image

    Image.fromarray(make_video(tmp_path / "v.mp4", frames=2, width=16, height=16)[0]).save(tmp_path / "f%03d.png")
    with pytest.raises(NotAVideoError, match="still image"):
        check_video(tmp_path / "f%03d.png")


def test_check_video_accepts_videos_of_two_frames_and_animated_gifs(tmp_path):
    make_video(tmp_path / "two.mp4", frames=2, width=16, height=16)
    info = check_video(tmp_path / "two.mp4")
    assert (info.num_frames, info.container, info.codec) == (2, "mov,mp4,m4a,3gp,3g2,mj2", "h264")
    make_gif(tmp_path / "anim.gif", frames=4)
    info = check_video(tmp_path / "anim.gif")
    assert (info.num_frames, info.fps, info.container) == (4, 25.0, "gif")
    assert read_video(tmp_path / "anim.gif").shape == (4, 32, 32, 3)
