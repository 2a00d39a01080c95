"""A camera's flaws on rendered clips: flicker, noise and compression, their strength, and the training flag."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from centrifuge.camera_flaws import camera_flaws
from centrifuge.config import TrainConfig, validate_train_config
from centrifuge.synth import PhotoSynth, SynthConfig
from centrifuge.train import photo_synth


@pytest.fixture
def photo_dir(tmp_path):
    """A folder with one textured photo."""
    folder = tmp_path / "photos"
    folder.mkdir()
    small = np.random.default_rng(0).integers(0, 256, size=(15, 20, 3), dtype=np.uint8)
    Image.fromarray(small).resize((160, 120), Image.Resampling.BICUBIC).save(folder / "p.png")
    return folder


def _flat_clip(level: int, frames: int = 6) -> np.ndarray:
    return np.full((frames, 24, 32, 3), level, np.uint8)


def test_flaws_keep_shape_and_input_and_add_noise_that_grows_with_brightness():
    dark, bright = _flat_clip(30), _flat_clip(200)
    before = bright.copy()
    out = camera_flaws(bright, random.Random(0))
    assert out.shape == bright.shape and out.dtype == np.uint8
    assert np.array_equal(bright, before)  # the input is not modified

    def spread(clip: np.ndarray) -> float:  # within a frame (flicker moves whole frames): the sensor noise,
        return float(np.mean([camera_flaws(clip, random.Random(s)).astype(np.float32).std(axis=(1, 2, 3)).mean()
                              for s in range(12)]))  # over a dozen strengths, after compression smooths it

    assert 0 < spread(dark) < 0.8 * spread(bright)


def test_flicker_moves_whole_frames_and_compression_removes_fine_detail():
    gains = [camera_flaws(_flat_clip(128, 24), random.Random(s)).astype(np.float32).mean(axis=(1, 2, 3))
             for s in range(8)]
    assert max(float(g.std()) for g in gains) > 0.5  # some clips flicker by more than half a grey level
    checker = (np.indices((24, 32)).sum(0) % 2)[..., None]  # the finest colour detail there is: red and blue
    clip = np.repeat((checker * [200, 0, 0] + (1 - checker) * [0, 0, 200])[None], 4, 0).astype(np.uint8)
    out = camera_flaws(clip, random.Random(3)).astype(np.float32)
    assert np.abs(np.diff(out, axis=2)).mean() < 0.8 * np.abs(np.diff(clip.astype(np.float32), axis=2)).mean()


def test_synth_camera_off_leaves_todays_clips_and_the_flag_reaches_the_renderer(photo_dir):
    today = PhotoSynth([photo_dir], seed=0).clip(1, 6, 32)
    assert np.array_equal(today, PhotoSynth([photo_dir], seed=0, cfg=SynthConfig(camera=0.0)).clip(1, 6, 32))
    synth = photo_synth(TrainConfig(photos=[str(photo_dir)], synth_camera=1.0))
    assert synth is not None and synth.cfg.camera == 1.0
    flawed = synth.clip(1, 6, 32)
    assert flawed.shape == today.shape and not np.array_equal(flawed, today)
    assert np.abs(flawed.astype(np.float32) - today).mean() < 12  # flaws, not a different clip
    with pytest.raises(ValueError, match=r"--synth-camera 2.0: must be in \[0, 1\]"):
        validate_train_config(TrainConfig(synth_camera=2.0))


def test_cli_synth_shows_the_synthesiser_flags_and_refuses_a_bad_share(photo_dir, tmp_path, capsys):
    import json

    from centrifuge.cli import main
    from centrifuge.video import read_video

    args = ["synth", str(photo_dir), "--n", "1", "--frames", "4", "--size", "32"]
    assert main([*args, "-o", str(tmp_path / "plain")]) == 0
    assert main([*args, "-o", str(tmp_path / "flawed"), "--synth-camera", "1"]) == 0
    settings = json.loads((tmp_path / "flawed" / "synth.json").read_text())["settings"]
    assert settings["synth_camera"] == 1.0 and settings["synth_motion"] == 0.0 and settings["synth_fast"] == 0.3
    assert json.loads((tmp_path / "plain" / "synth.json").read_text())["settings"]["synth_camera"] == 0.0
    plain, flawed = (read_video(tmp_path / d / "synth_000.mp4").astype(np.float32) for d in ("plain", "flawed"))
    assert np.abs(plain - flawed).mean() > 0.5
    capsys.readouterr()
    assert main([*args, "-o", str(tmp_path / "bad"), "--synth-camera", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--synth-camera 1.5" in err[0] and not (tmp_path / "bad").exists()
