"""`centrifuge evaluate` end to end on tiny generated videos, and the CLI's handling of bad input."""

import json

import pytest
import torch
from helpers import make_audio_only, make_video

from centrifuge.checkpoint import save_weights
from centrifuge.cli import main
from centrifuge.evaluate import evaluate_clips, load_clips
from centrifuge.model import ModelConfig, build_model


@pytest.fixture
def videos(tmp_path):
    paths = [tmp_path / f"v{i}.mp4" for i in range(3)]
    for i, p in enumerate(paths):
        make_video(p, frames=10, width=40, height=32, seed=i)
    return [str(p) for p in paths]


@pytest.fixture
def model_file(tmp_path):
    cfg = ModelConfig(n_layers=2, width=0.125)
    path = tmp_path / "tiny.safetensors"
    save_weights(path, build_model(cfg), cfg)
    return str(path)


def test_evaluate_cli_json(videos, model_file, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["evaluate", *videos, "--model", model_file, "--frames", "4", "--size", "32", "--json", str(out),
                 "--precision", "fp32"]) == 0  # as evaluate_clips below computes it
    res = json.loads(out.read_text())
    for key in ("identity_loss", "model_loss", "ratio", "psnr_db", "identity_psnr_db", "pairs"):
        assert key in res
    assert res["pairs"] == 3
    assert res["ratio"] == pytest.approx(res["model_loss"] / res["identity_loss"])
    # the tone oracle: its loss and ratio overall and per pair, and the pairs where the model is below it
    assert res["tone_oracle_ratio"] == pytest.approx(res["tone_oracle_loss"] / res["identity_loss"])
    assert 0 < res["tone_oracle_ratio"] < 1
    rows = res["per_pair"]
    assert res["beats_tone_oracle"] == sum(r["model_loss"] < r["tone_oracle_loss"] for r in rows)
    for r in rows:
        assert r["tone_oracle_ratio"] == pytest.approx(r["tone_oracle_loss"] / r["identity_loss"])
    printed = capsys.readouterr().out
    assert "model / identity" in printed
    assert f"| tone oracle / identity | {res['tone_oracle_ratio']:.3f} |" in printed
    assert f"model beats the tone oracle on {res['beats_tone_oracle']} of 3 pairs" in printed
    # the same figures from the Python API
    clips = load_clips(videos, 4, 32)
    from centrifuge.checkpoint import load_model

    model, _ = load_model(model_file)
    again = evaluate_clips(model, clips, [(0, 1), (0, 2), (1, 2)])
    assert again["model_loss"] == pytest.approx(res["model_loss"], rel=1e-5)
    assert again["tone_oracle_loss"] == pytest.approx(res["tone_oracle_loss"], rel=1e-5)
    # an existing JSON is not overwritten without being asked
    assert main(["evaluate", *videos, "--model", model_file, "--frames", "4", "--size", "32", "--json", str(out)]) == 2
    assert main(["evaluate", *videos, "--model", model_file, "--frames", "4", "--size", "32", "--pairs", "1",
                 "--involving", videos[2], "--json", str(out), "--overwrite"]) == 0
    res = json.loads(out.read_text())
    assert res["pairs"] == 1


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("centrifuge: error:"), err
    assert "Traceback" not in err[0]
    return err[0]


def test_bad_inputs_exit_2(videos, model_file, tmp_path, capsys):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    audio = tmp_path / "audio.m4a"
    make_audio_only(audio)
    bad_model = tmp_path / "bad.safetensors"
    bad_model.write_bytes(b"\x00" * 64)
    cases = {
        "missing file": [videos[0], str(tmp_path / "missing.mp4")],
        "not a video": [videos[0], str(text)],
        "no video stream": [videos[0], str(audio)],
    }
    for name, vids in cases.items():
        assert main(["evaluate", *vids, "--model", model_file, "--frames", "4", "--size", "32"]) == 2, name
        _one_error_line(capsys)
    assert main(["evaluate", *videos, "--model", str(bad_model), "--frames", "4", "--size", "32"]) == 2
    assert "checkpoint" in _one_error_line(capsys)
    assert main(["evaluate", *videos, "--model", str(tmp_path / "nope.safetensors")]) == 2
    _one_error_line(capsys)


def test_exclude_trained_scores_only_pairs_of_unseen_clips(tmp_path, capsys):
    seen = [tmp_path / "seen" / f"s{i}.mp4" for i in range(2)]
    unseen = [tmp_path / "unseen" / f"u{i}.mp4" for i in range(3)]
    for i, p in enumerate(seen + unseen):
        p.parent.mkdir(exist_ok=True)
        make_video(p, frames=6, width=32, height=32, seed=i)
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "seen"), "--preset", "cpu-tiny", "--out", str(run), "--iterations", "1",
                 "--frames", "4", "--size", "32", "--batch-size", "2", "--no-progress", "--device", "cpu",
                 "--no-compile-loss", "--image-every", "0", "--layers", "2", "--final-endpoint", "Mixed_3c"]) == 0
    out = tmp_path / "eval.json"
    capsys.readouterr()
    args = ["evaluate", *map(str, seen + unseen), "--model", str(run), "--frames", "4", "--size", "32"]
    assert main([*args, "--exclude-trained", "--per-pair", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["pairs"] == 3 and "left out 2 of 5 videos" in printed
    assert sorted(tuple(r["clips"]) for r in res["per_pair"]) == [("u0.mp4", "u1.mp4"), ("u0.mp4", "u2.mp4"),
                                                                   ("u1.mp4", "u2.mp4")]
    assert "| u0.mp4 | u1.mp4 |" in printed
    assert "tone oracle / identity loss" in printed
    for r in res["per_pair"]:  # --per-pair: the oracle's ratio beside the model's
        assert f"| {r['ratio']:.3f} | {r['tone_oracle_ratio']:.3f} |" in printed
    # a weights file that does not list its training videos cannot say what to leave out
    cfg = ModelConfig(n_layers=2, width=0.125)
    save_weights(tmp_path / "bare.safetensors", build_model(cfg), cfg)
    assert main([*args, "--exclude-trained", str(tmp_path / "bare.safetensors")]) == 2
    assert "does not record" in _one_error_line(capsys)
    # one that does (as the packaged model's metadata does)
    save_weights(tmp_path / "listed.safetensors", build_model(cfg), cfg, {"trained_on": ["s0.mp4", "u0.mp4"]})
    assert main([*args, "--exclude-trained", str(tmp_path / "listed.safetensors"), "--json", str(out),
                 "--overwrite"]) == 0
    assert json.loads(out.read_text())["pairs"] == 3  # s1, u1, u2
    # nothing left to pair
    assert main(["evaluate", *map(str, seen), "--model", str(run), "--exclude-trained"]) == 2
    assert "not trained on" in _one_error_line(capsys)


def test_evaluate_cli_tone_match_blends_clips_of_one_colour_statistics(videos, model_file, tmp_path, capsys):
    """--tone-match: the second clip of each pair takes the first one's colour statistics, so the tone oracle,
    which splits the plain blends of these differently coloured clips, is near the identity there."""
    runs = {}
    for flags in ([], ["--tone-match"]):
        out = tmp_path / f"eval{len(flags)}.json"
        assert main(["evaluate", *videos, "--model", model_file, "--frames", "4", "--size", "32", "--json", str(out),
                     *flags]) == 0
        runs[bool(flags)] = json.loads(out.read_text())
    plain, matched = runs[False], runs[True]
    assert (plain["tone_match"], matched["tone_match"]) == (False, True)
    assert matched["identity_loss"] < plain["identity_loss"]  # the matched layers are closer to their blend
    assert matched["tone_oracle_ratio"] > plain["tone_oracle_ratio"] + 0.05
    assert "the second clip given the first one's colour statistics" in capsys.readouterr().out


def test_evaluate_cli_frozen_judges_the_same_pairs_without_motion(videos, model_file, tmp_path, capsys):
    """--frozen: every clip is its middle frame repeated (the generated videos move, so the figures change);
    --frozen one: only the second clip of each pair, named so; recorded in the JSON and said in the table."""
    from centrifuge.evaluate import frozen_clips

    clips = load_clips(videos, 4, 32)
    still = frozen_clips(clips)
    assert still.shape == clips.shape and torch.equal(still[:, :, 0], clips[:, :, 2])
    assert torch.equal(still[:, :, 0], still[:, :, 3]) and not torch.equal(clips[:, :, 0], clips[:, :, 3])
    runs = {}
    for flags in ([], ["--frozen"], ["--frozen", "one"]):
        out = tmp_path / f"eval{len(flags)}.json"
        assert main(["evaluate", *videos, "--model", model_file, "--frames", "4", "--size", "32", "--json", str(out),
                     "--per-pair", *flags]) == 0
        runs[" ".join(flags)] = json.loads(out.read_text())
    moving, both, one = runs[""], runs["--frozen"], runs["--frozen one"]
    assert (moving["frozen"], both["frozen"], one["frozen"]) == (None, "both", "one")
    assert len({moving["identity_loss"], both["identity_loss"], one["identity_loss"]}) == 3
    assert [r["clips"] for r in one["per_pair"]] == [[a, b + " (frozen)"] for a, b in (r["clips"] for r in moving[
        "per_pair"])]
    out = capsys.readouterr().out
    assert "every clip frozen at its middle frame" in out and "the second clip of each pair frozen" in out
    assert "v2.mp4 (frozen)" in out
