"""`centrifuge prepare`: the low-resolution cache on tiny generated videos."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from helpers import make_video

from centrifuge.cache import FAILURES, MANIFEST, cached_videos, is_cache, prepare_cache, read_manifest
from centrifuge.cli import main
from centrifuge.data import BlendDataset, ClipSpec
from centrifuge.sources import load_kinetics
from centrifuge.video import probe, read_video


@pytest.fixture
def source(tmp_path):
    """Three good videos (landscape, portrait in a subfolder, odd long side) and one corrupt file."""
    src = tmp_path / "src"
    (src / "walking").mkdir(parents=True)
    make_video(src / "wide.mp4", frames=12, width=64, height=48, seed=0)
    make_video(src / "walking" / "tall.mp4", frames=9, width=36, height=60, fps=30, seed=1)
    make_video(src / "odd.mp4", frames=7, width=70, height=40, seed=2)  # 70 * 32/40 = 56; 56 is even
    (src / "broken.mp4").write_bytes(b"this is not a video" * 10)
    return src


def test_prepare_writes_manifest_and_small_readable_videos(source, tmp_path):
    out = tmp_path / "cache"
    r = prepare_cache(source, out, size=32, workers=0)
    assert (r.total, r.transcoded, r.skipped, len(r.failed)) == (4, 3, 0, 1)
    assert r.failed[0][0].endswith("broken.mp4")
    assert is_cache(out)
    rows = {e.path: e for e in read_manifest(out)}
    assert set(rows) == {"wide.mp4", "walking/tall.mp4", "odd.mp4"}
    expected = {"wide.mp4": (12, 25.0, 42, 32, ""), "walking/tall.mp4": (9, 30.0, 32, 52, "walking"),
                "odd.mp4": (7, 25.0, 56, 32, "")}
    for rel, (frames, fps, w, h, label) in expected.items():
        e = rows[rel]
        assert (e.frames, e.fps, e.width, e.height, e.label) == (frames, fps, w, h, label)
        assert e.source == str(source / rel)
        info = probe(out / rel)
        assert min(info.width, info.height) == 32
        assert (info.width, info.height, info.num_frames) == (w, h, frames)
        clip = read_video(out / rel)
        assert clip.shape == (frames, h, w, 3)
        # same content as the source scaled down (H.264 at CRF 18: small differences only)
        ref = read_video(source / rel, size=32)[:, :h, :w]
        assert np.abs(clip.astype(int) - ref.astype(int)).mean() < 6
    assert cached_videos(out) == sorted(out / rel for rel in expected)
    with open(out / FAILURES, newline="") as f:
        failures = list(csv.DictReader(f))
    assert [row["source"] for row in failures] == [str(source / "broken.mp4")]
    # the cache is a folder of videos that the training data pipeline reads as is
    ds = BlendDataset(cached_videos(out), ClipSpec(frames=4, size=24, train=True), length=3)
    assert ds[0]["mix"].shape == (3, 4, 24, 24)


def test_prepare_resumes(source, tmp_path):
    out = tmp_path / "cache"
    prepare_cache(source, out, size=32, workers=0)
    stamp = (out / "wide.mp4").stat().st_mtime_ns
    r = prepare_cache(source, out, size=32, workers=0)
    assert (r.transcoded, r.skipped, len(r.failed)) == (0, 3, 1)  # the corrupt file is retried and fails again
    assert (out / "wide.mp4").stat().st_mtime_ns == stamp
    # a run killed before writing the manifest: finished files are found and described again
    (out / MANIFEST).unlink()
    (out / "odd.mp4").unlink()
    r = prepare_cache(source, out, size=32, workers=0)
    assert (r.transcoded, r.skipped, len(r.failed)) == (1, 2, 1)
    assert {e.path for e in read_manifest(out)} == {"wide.mp4", "walking/tall.mp4", "odd.mp4"}
    assert {e.path: e.frames for e in read_manifest(out)}["wide.mp4"] == 12
    # a different size into the same folder would mix resolutions
    with pytest.raises(ValueError, match="size 32"):
        prepare_cache(source, out, size=64, workers=0)


def test_prepare_kinetics_keeps_names_and_labels(tmp_path):
    root = tmp_path / "kinetics"
    (root / "train" / "juggling").mkdir(parents=True)
    (root / "train" / "dancing").mkdir(parents=True)
    make_video(root / "train" / "juggling" / "abc_000001_000011.mp4", frames=6, width=48, height=36, seed=0)
    make_video(root / "train" / "dancing" / "xyz_000005_000015.mp4", frames=6, width=48, height=36, seed=1)
    make_video(root / "train" / "dancing" / "not_in_csv.mp4", frames=6, width=48, height=36, seed=2)
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("label,youtube_id,time_start,time_end,split\n"
                        "juggling,abc,1,11,train\ndancing,xyz,5,15,train\ndancing,missing,0,10,train\n")
    out = tmp_path / "cache"
    r = prepare_cache(root, out, size=24, kinetics_csv=str(csv_path), workers=0)
    assert (r.total, r.transcoded, len(r.failed)) == (2, 2, 0)
    labels = {e.path: (e.label, e.split) for e in read_manifest(out)}
    assert labels == {"train/juggling/abc_000001_000011.mp4": ("juggling", "train"),
                      "train/dancing/xyz_000005_000015.mp4": ("dancing", "train")}
    entries, missing = load_kinetics(csv_path, out, split="train")  # training finds the cached clips
    assert missing == 1 and sorted(e.path.parent.name for e in entries) == ["dancing", "juggling"]


def test_prepare_cli_parallel(source, tmp_path, capsys):
    out = tmp_path / "cache"
    # one video of four fails: exit status 1 and a summary line on stderr
    assert main(["prepare", str(source), "--out", str(out), "--size", "32", "--workers", "2", "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "4 videos: 3 transcoded, 0 already done, 1 failed" in captured.out
    assert captured.err.strip().splitlines() == [f"centrifuge: error: 1 of 4 videos failed; they are listed in "
                                                 f"{out / 'failures.csv'} and retried on the next run"]
    assert len(read_manifest(out)) == 3
    assert main(["prepare", str(source), "--out", str(out), "--size", "32", "--workers", "2", "--no-progress"]) == 1
    assert "0 transcoded, 3 already done, 1 failed" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--size", "33"], "--size must be even"),
    (["--workers", "-1"], "--workers must be >= 0"),
])
def test_prepare_cli_bad_input(source, tmp_path, capsys, args, message):
    assert main(["prepare", str(source), "--out", str(tmp_path / "c"), "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_prepare_cli_missing_source(tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "c"), "--no-progress"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
