"""The packaged default model and the demo's pipeline (with a tiny model, to stay fast)."""

import math

import pytest

from centrifuge.checkpoint import default_model_path, load_model, save_weights
from centrifuge.cli import main
from centrifuge.demo import BLEND_CLIPS, REAL_CLIP, asset, run_demo
from centrifuge.model import ModelConfig, build_model


def test_default_model_ships_and_loads():
    path = default_model_path()
    assert path.is_file() and path.stat().st_size < 30e6
    model, info = load_model(None)
    assert not model.training  # BatchNorm uses its moving averages
    assert info["config"]["n_layers"] >= 2
    assert info["train"]["frames"] > 0 and info["train"]["size"] > 0
    for name in (*BLEND_CLIPS, REAL_CLIP):
        assert asset(name).is_file()


def test_demo_writes_outputs(tmp_path, capsys):
    cfg = ModelConfig(n_layers=2, width=0.125)
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, build_model(cfg), cfg)
    out = tmp_path / "demo"
    report = run_demo(out, str(weights), progress=False)
    fig = report["figures"]
    for key in ("identity_loss", "model_loss", "separate_loss", "psnr_db", "identity_psnr_db"):
        assert math.isfinite(fig[key])
    assert fig["ratio"] == pytest.approx(fig["model_loss"] / fig["identity_loss"])
    for sub in ("blend", "real"):
        for name in ("preview.mp4", "contact.png", "layers.json", "layer_0.mp4", "layer_1.mp4"):
            assert (out / sub / name).is_file(), (sub, name)
    assert (out / "blend" / "truth.png").is_file()
    # a second run into the same folder must be asked for
    assert main(["demo", "--out", str(out), "--model", str(weights), "--no-progress"]) == 2
    assert "exists" in capsys.readouterr().err
