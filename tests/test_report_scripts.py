"""The training-curve figure: a run's TensorBoard scalars read back and drawn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from centrifuge.experiments.plots import line_chart

ROOT = Path(__file__).resolve().parents[1]


def test_line_chart_puts_each_point_at_its_place():
    img = np.asarray(line_chart({"a": [(0, 0.0), (10, 1.0)]}, [(255, 0, 0)], "t", size=(400, 300)))
    red = np.argwhere((img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] < 60))
    lower_left, upper_right = red[red[:, 1].argmin()], red[red[:, 1].argmax()]
    assert upper_right[0] < lower_left[0]  # the line rises to the right
    assert lower_left[1] < 80 and upper_right[1] > 370


def test_plot_curves_reads_the_runs_scalars(tmp_path):
    run = tmp_path / "run"
    with SummaryWriter(str(run / "tb")) as w:
        for step, v in [(250, 0.9), (500, 0.8), (750, 0.7)]:
            w.add_scalar("val/ratio", v, step)
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from plot_curves import read_curve
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    got = read_curve(run, "val/ratio")
    assert [s for s, _ in got] == [250, 500, 750]
    assert np.allclose([v for _, v in got], [0.9, 0.8, 0.7])
    out = tmp_path / "curve.png"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_curves.py"), str(run), "-o", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size == (720, 380)


def test_yardstick_table_counts_pairs_at_or_above_the_identity_and_names_the_worst(tmp_path):
    import torch

    from centrifuge.evaluate import evaluate_clips

    clips = torch.rand(3, 3, 2, 16, 16) * 2 - 1

    class Blend(torch.nn.Module):  # the identity itself: every pair's ratio is exactly 1
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x, x], 1)

    result = evaluate_clips(Blend(), clips, [(0, 1), (0, 2), (1, 2)])
    for r in result["per_pair"]:
        r["clips"] = [f"c{r['a']}.mp4", f"c{r['b']}.mp4"]
    path = tmp_path / "r.json"
    path.write_text(__import__("json").dumps(result))
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "yardstick_table.py"), str(path), "--names", "id"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    cells = [c.strip() for c in done.stdout.splitlines()[-1].split("|")[1:-1]]
    assert cells[:4] == ["id", "3", "1.000", "1.000"]
    assert cells[5] == "3"  # all three pairs at the identity
    assert cells[7] == "1.00"  # the blend twice: one picture, the same tone
    beats = sum(r["model_loss"] < r["tone_oracle_loss"] for r in result["per_pair"])
    assert cells[8] == str(beats)
    # a file written before evaluate reported the oracle borrows its figures from one that has them, same pairs
    for r in result["per_pair"]:
        r["model_loss"] = r["tone_oracle_loss"] * (0.5 if r["a"] == 0 else 2.0)
        del r["tone_oracle_loss"]
    old = tmp_path / "old.json"
    old.write_text(__import__("json").dumps(result))
    script = [sys.executable, str(ROOT / "scripts" / "yardstick_table.py")]
    both = subprocess.run([*script, str(path), str(old)], capture_output=True, text=True).stdout.splitlines()
    assert both[-1].split("|")[-2].strip() == "2"  # the two pairs with clip 0
    alone = subprocess.run([*script, str(old)], capture_output=True, text=True).stdout.splitlines()
    assert alone[-1].split("|")[-2].strip() == "-"
    # the same pairs tone-matched are other blends: their oracle is not the plain blends' (and the reverse)
    matched = dict(result, tone_match=True)
    for r in matched["per_pair"]:
        r["tone_oracle_loss"] = 10.0  # every model beats it
    tm = tmp_path / "tm.json"
    tm.write_text(__import__("json").dumps(matched))
    lines = subprocess.run([*script, str(path), str(tm)], capture_output=True, text=True).stdout.splitlines()
    assert [line.split("|")[-2].strip() for line in lines[-2:]] == [str(beats), "3"] and beats < 3


def test_training_fit_scores_the_identity_at_one_and_refuses_a_missing_folder(tmp_path):
    import torch
    from helpers import TINY, make_video

    from centrifuge.checkpoint import save_weights
    from centrifuge.model import ModelConfig, build_model

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        small = np.random.default_rng(i).integers(0, 256, size=(15, 20, 3), dtype=np.uint8)
        Image.fromarray(small).resize((160, 120), Image.Resampling.BICUBIC).save(photos / f"p{i}.jpg")
    cfg = ModelConfig(**TINY, residual=True)
    model = build_model(cfg)
    torch.nn.init.zeros_(model.decoder.head.weight)
    torch.nn.init.zeros_(model.decoder.head.bias)  # every layer is the blend: the identity itself
    save_weights(tmp_path / "identity.safetensors", model, cfg)
    script = [sys.executable, str(ROOT / "scripts" / "training_fit.py")]
    done = subprocess.run([*script, "--photos", str(photos), "--blends", "2", str(tmp_path / "identity.safetensors")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("2 fresh photo training blends of 16x96x96 (seed 9999)")
    assert "identity.safetensors: mean ratio 1.000, median 1.000" in lines[1]
    clip = tmp_path / "clip.mp4"
    make_video(clip, frames=20, width=160, height=120)
    done = subprocess.run([*script, "--photos", str(photos), "--videos", str(clip), "--tone-match", "--blends", "2",
                           "--frames", "8", "--size", "48", str(tmp_path / "identity.safetensors")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("2 fresh tone-matched photo and video training blends of 8x48x48 (seed 9999)")
    assert "identity.safetensors: mean ratio 1.000" in done.stdout
    done = subprocess.run([*script, "--photos", str(photos), "--same-photo", "--frozen", "--blends", "2", "--frames",
                           "4", "--size", "32", str(tmp_path / "identity.safetensors")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("2 fresh photo (one photo per blend) training blends of 4x32x32")
    assert "; frozen 1.000" in done.stdout
    done = subprocess.run([*script, "--photos", str(tmp_path / "none"), "--blends", "2", str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "none" in done.stderr
    done = subprocess.run([*script, "--photos", str(photos), "--size", "0", str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == "error: --size must be at least 1"


def test_training_fit_tone_match_gives_both_layers_one_colour_statistics(tmp_path):
    """--tone-match gives both layers one colour statistics; frozen() stills blends and mixes them again."""
    import importlib.util

    import torch

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, colour in enumerate([(250, 40, 40), (30, 60, 220)]):  # a red photo and a blue one: tone differs
        noise = np.random.default_rng(i).integers(-40, 40, size=(120, 160, 3))
        Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)).save(photos / f"p{i}.png")
    spec = importlib.util.spec_from_file_location("training_fit", ROOT / "scripts" / "training_fit.py")
    fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit)

    def channel_gap(blends):  # the largest gap between the two layers' per-channel means
        return max((b["layers"][0].mean((1, 2, 3)) - b["layers"][1].mean((1, 2, 3))).abs().max().item() for b in blends)

    assert channel_gap(fit.fresh_blends([str(photos)], [], 4, seed=1, tone_match=True)) < 0.05
    assert channel_gap(fit.fresh_blends([str(photos)], [], 4, seed=1)) > 0.15
    moving = fit.fresh_blends([str(photos)], [], 2, seed=1, frames=4, size=32)
    for item, still in zip(moving, fit.frozen(moving), strict=True):
        assert torch.equal(still["layers"][:, :, 0], item["layers"][:, :, 2])
        assert torch.equal(still["layers"][:, :, 0], still["layers"][:, :, 3])
        torch.testing.assert_close(still["mix"], (item["alpha"][:, None, None, None, None] * still["layers"]).sum(0))


def test_tone_oracle_tone_match_takes_the_global_oracle_to_the_identity(tmp_path):
    import json
    from statistics import fmean

    from helpers import make_video

    for seed in range(3):  # one moving square each, on backgrounds of different colours
        make_video(tmp_path / f"v{seed}.mp4", frames=8, width=48, height=48, seed=seed * 5, pattern="moving")
    script = [sys.executable, str(ROOT / "scripts" / "tone_oracle.py"), str(tmp_path), "--frames", "8", "--size", "32",
              "--block", "8"]
    figures = {}
    for flag in ([], ["--tone-match"]):
        out = tmp_path / f"oracle{len(flag)}.json"
        done = subprocess.run([*script, *flag, "--json", str(out)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        figures[bool(flag)] = json.loads(out.read_text())
    assert figures[True]["tone_match"] and not figures[False]["tone_match"]
    plain, matched = (fmean([r["global"] for r in figures[k]["per_pair"]]) for k in (False, True))
    assert matched > plain + 0.05  # matched clips leave the global re-toning less to win
    assert all(r["block"] <= r["global"] + 1e-6 for k in (False, True) for r in figures[k]["per_pair"])


def test_motion_toy_blends_differ_only_in_motion_and_the_script_runs(tmp_path):
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("motion_toy", ROOT / "scripts" / "motion_toy.py")
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    mix, layers = toy.blends(torch.Generator().manual_seed(0), 3, 4, 16)
    assert mix.shape == (3, 3, 4, 16, 16) and layers.shape == (3, 2, 3, 4, 16, 16)
    torch.testing.assert_close(mix, layers.mean(dim=1))
    # each layer is one texture sliding: frame t + 1 is frame t shifted by a whole velocity, the two layers' differ
    for item in layers:
        shifts = []
        for layer in item:
            found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                     if torch.equal(layer[:, 1, 2:14, 2:14], layer[:, 0, 2 + dy:14 + dy, 2 + dx:14 + dx])]
            assert len(found) == 1
            shifts.append(found[0])
        assert shifts[0] != shifts[1]
    still_mix, still = toy.frozen(layers)
    assert torch.equal(still[:, :, :, 0], layers[:, :, :, 2]) and torch.equal(still_mix, still.mean(dim=1))
    script = [sys.executable, str(ROOT / "scripts" / "motion_toy.py")]
    tiny = ["--frames", "4", "--size", "16", "--judge", "2"]
    weights = tmp_path / "toy.safetensors"
    done = subprocess.run([*script, "--steps", "2", "--tone-grid", "0", "--out", str(weights), *tiny],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "tone grid 0, 2 steps, 4x16x16: model / identity moving" in done.stdout and weights.exists()
    done = subprocess.run([*script, "--steps", "0", "--init", str(weights), *tiny], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "tone grid 0, 0 steps" in done.stdout  # the model's own head, whatever --tone-grid says
    done = subprocess.run([*script, "--steps", "1", "--corrector", *tiny], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "tone grid 8 + corrector, 1 steps" in done.stdout
    for bad in (["--size", "8"], ["--out", str(weights)], ["--init", str(tmp_path / "none.safetensors")]):
        done = subprocess.run([*script, *tiny, "--steps", "1", *bad], capture_output=True, text=True)
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, (bad, done.stderr)
