"""The packaged default model and the demo's pipeline (with a tiny model, to stay fast)."""

import math

import pytest

from centrifuge.checkpoint import default_model_path, load_model, save_weights
from centrifuge.cli import main
from centrifuge.demo import BLEND_CLIPS, REAL_CLIP, asset, fit_note, run_demo
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


def test_demo_labels_figures_of_clips_the_model_trained_on(tmp_path, capsys):
    cfg = ModelConfig(n_layers=2, width=0.125)
    bare, listed = tmp_path / "bare.safetensors", tmp_path / "listed.safetensors"
    save_weights(bare, build_model(cfg), cfg)
    save_weights(listed, build_model(cfg), cfg, {"trained_on": [BLEND_CLIPS[0], "other.mp4"]})
    assert main(["demo", "--out", str(tmp_path / "a"), "--model", str(bare), "--no-progress"]) == 0
    assert "measure fit" not in capsys.readouterr().out
    assert main(["demo", "--out", str(tmp_path / "b"), "--model", str(listed), "--no-progress"]) == 0
    assert f"the model was trained on {BLEND_CLIPS[0]}: these figures measure fit" in capsys.readouterr().out
    from centrifuge.app_text import blend_markdown  # the page's blend table carries the same warning

    note = fit_note({"trained_on": list(BLEND_CLIPS)}, [asset(n) for n in BLEND_CLIPS])
    assert note.startswith(f"(the model was trained on {BLEND_CLIPS[0]} and {BLEND_CLIPS[1]}:")
    figures = {"identity_loss": 0.4, "model_loss": 0.3, "ratio": 0.75, "psnr_db": 18.0, "identity_psnr_db": 15.0,
               "pairs": 1, "separate_loss": 0.3}
    assert blend_markdown(figures, list(BLEND_CLIPS), "m", note).endswith(note)
    assert fit_note({}, BLEND_CLIPS) == ""
