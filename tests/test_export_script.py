"""``scripts/export_default_model.py``: the packaged model's provenance, from a two-phase run (``--init``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from helpers import make_video
from safetensors import safe_open
from safetensors.torch import load_file

import centrifuge.monitor as monitor_module
from centrifuge.checkpoint import WEIGHTS, read_model_info
from centrifuge.config import TrainConfig, load_preset
from centrifuge.model import ModelConfig
from centrifuge.train import train

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "export_default_model.py"


def _script():
    spec = importlib.util.spec_from_file_location("export_default_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def videos(tmp_path) -> list[str]:
    paths = [tmp_path / f"clip{i}.mp4" for i in range(3)]
    for i, p in enumerate(paths):
        make_video(p, frames=10, width=64, height=48, seed=i)
    return [str(p) for p in paths]


def _train(model: ModelConfig, cfg: TrainConfig, monkeypatch) -> None:
    monkeypatch.setattr(monitor_module, "measure_peak_flops", lambda *a, **k: 1.0)  # only for the log
    train(model, cfg, progress=False)


def test_export_records_both_phases_and_the_runs_preset(videos, tmp_path, monkeypatch):
    model, preset = load_preset("cpu-tiny")  # a preset that trains in seconds; not the one the script used to write
    common = dict(preload=True, workers=0, log_every=1, ckpt_every=1000, image_every=0, device="cpu", seed=0,
                  compile_loss=False, augment=False)
    first, second = tmp_path / "first", tmp_path / "second"
    _train(model, TrainConfig(**{**preset.__dict__, **common, "data": videos[:2], "iterations": 2,
                                 "out": str(first)}), monkeypatch)
    _train(model, TrainConfig(**{**preset.__dict__, **common, "data": videos, "iterations": 1, "lr": 5e-4,
                                 "init": str(first), "out": str(second)}), monkeypatch)
    out = tmp_path / "exported.safetensors"
    assert _script().main(second, "three clips", "a test machine", out) == out

    cfg, info, _ = read_model_info(out)
    assert cfg == model
    assert info["preset"] == "cpu-tiny"
    assert info["step"] == 3
    assert [(p["run"], p["iterations"], p["lr"]) for p in info["phases"]] == [("first", 2, 0.002),
                                                                           ("second", 1, 5e-4)]
    assert info["train"] == {"frames": 8, "size": 48}
    assert info["trained_on"] == ["clip0.mp4", "clip1.mp4", "clip2.mp4"]  # both phases' videos
    assert (info["data"], info["hardware"]) == ("three clips", "a test machine")
    exported, trained = load_file(str(out)), load_file(str(second / WEIGHTS))
    assert exported.keys() == trained.keys() and all(torch.equal(exported[k], trained[k]) for k in trained)
    with safe_open(str(out), "pt") as f:
        assert json.loads(f.metadata()["centrifuge_info"]) == info


def test_a_fine_tune_of_a_weights_file_keeps_that_model_s_phases(videos, tmp_path, monkeypatch):
    model, preset = load_preset("cpu-tiny")
    common = dict(preload=True, workers=0, log_every=1, ckpt_every=1000, image_every=0, device="cpu", seed=0,
                  compile_loss=False, augment=False)
    first = tmp_path / "first"
    _train(model, TrainConfig(**{**preset.__dict__, **common, "data": videos[:2], "iterations": 2,
                                 "out": str(first)}), monkeypatch)
    packaged = _script().main(first, "two clips", "a test machine", tmp_path / "packaged.safetensors")
    tuned = tmp_path / "tuned"  # started from the weights file, as --init default starts from the packaged one
    _train(model, TrainConfig(**{**preset.__dict__, **common, "data": videos, "iterations": 1, "lr": 5e-4,
                                 "init": str(packaged), "out": str(tuned)}), monkeypatch)
    _, info, _ = read_model_info(_script().main(tuned, "three clips", "a test machine", tmp_path / "out.safetensors"))
    assert info["step"] == 3
    assert [(p["run"], p["iterations"]) for p in info["phases"]] == [("first", 2), ("tuned", 1)]
    assert info["wall_time_s"] >= read_model_info(packaged)[1]["wall_time_s"]
    assert info["trained_on"] == ["clip0.mp4", "clip1.mp4", "clip2.mp4"]


def test_a_run_of_no_shipped_preset_is_custom():
    script = _script()
    model, preset = load_preset("cpu-small")
    assert script.run_preset(model, preset.__dict__) == "cpu-small"
    assert script.run_preset(model, {**preset.__dict__, "frames": 24}) == "custom"
    assert script.run_preset(ModelConfig(n_layers=2, width=0.25), preset.__dict__) == "custom"
    paper_model, paper = load_preset("paper-112")
    assert script.run_preset(paper_model, {**paper.__dict__, "iterations": 10, "lr": 0.5}) == "paper-112"
