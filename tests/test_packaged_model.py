"""The model inside the package is the one the README describes, and it separates better than the identity:
random weights of the right shape fail here."""

from __future__ import annotations

import pytest
import torch
from reference_counts import decoder_parameters, i3d_parameters

from centrifuge.checkpoint import CheckpointError, load_model, read_model_info
from centrifuge.demo import BLEND_CLIPS, FRAMES, SIZE, asset
from centrifuge.evaluate import evaluate_clips, load_clips
from centrifuge.model import ModelConfig, Predictor

#: The README's model card: predictor, 8 layers, I3D to Mixed_5c at width 0.25, decoder at 0.5 to a tone grid
#: of stride 8.
CARD = ModelConfig(n_layers=8, corrector=False, width=0.25, final_endpoint="Mixed_5c", decoder_width=0.5,
                   residual=True, tone_grid=8)


@pytest.fixture(scope="module")
def packaged():
    return load_model(None)


def test_the_packaged_architecture_is_the_model_cards(packaged):
    model, info = packaged
    cfg, _, _ = read_model_info(None)
    assert cfg == CARD
    assert isinstance(model, Predictor) and model.n_layers == 8 and model.tone_grid == 8
    # cpu-small's clips, batch and optimizer with another head: no shipped preset, so "custom"
    assert (info["train"]["frames"], info["train"]["size"], info["preset"]) == (16, 96, "custom")
    # "2.1 M parameters", counted from the published I3D table and the decoder's design (tests/reference_counts)
    encoder, decoder = i3d_parameters(0.25), decoder_parameters(0.25, 0.5, 8, tone_grid=8)
    assert (encoder, decoder) == (783_032, 1_267_952)
    assert sum(p.numel() for p in model.encoder.parameters()) == encoder
    assert sum(p.numel() for p in model.decoder.parameters()) == decoder
    assert sum(p.numel() for p in model.parameters()) == 2_050_984
    assert list(model.decoder.stages) == ["Mixed_4f", "Mixed_3c"]
    assert model.decoder.head.out_channels == 6 * 8  # a gain and an offset per colour channel and layer


def test_the_packaged_model_beats_the_identity_on_the_demo_blend(packaged):
    model, _ = packaged
    clips = load_clips([asset(name) for name in BLEND_CLIPS], FRAMES, SIZE)
    with torch.no_grad():
        r = evaluate_clips(model, clips, [(0, 1)])
    # measured: identity 0.3403 / 15.22 dB, model 0.2853 / 17.30 dB (ratio 0.838; both clips are among its
    # training clips, so this checks the weights, not generalisation). An untrained tone-grid model is about the
    # identity (ratio 1.0); random weights are worse still.
    assert r["ratio"] < 0.9, r
    assert r["psnr_db"] > r["identity_psnr_db"] + 1.5, r


def test_default_names_the_packaged_model_unless_such_a_path_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, _, packaged_path = read_model_info(None)
    assert read_model_info("default")[2] == packaged_path
    (tmp_path / "default").mkdir()  # a run folder called "default" is the user's, and it has no weights
    with pytest.raises(CheckpointError, match="no such model"):
        read_model_info("default")
