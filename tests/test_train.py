"""Training loop on tiny generated videos: it learns, it resumes exactly, its schedule, its command line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from helpers import broken_compile, make_video
from safetensors.torch import load_file

import centrifuge.train as train_module
from centrifuge.checkpoint import CONFIG, LIVE_WEIGHTS, WEIGHTS, load_model, read_model_info
from centrifuge.cli import main
from centrifuge.config import TrainConfig
from centrifuge.data import BlendDataset
from centrifuge.distributed import split_batch
from centrifuge.errors import CheckpointError
from centrifuge.evaluate import trained_clip_names
from centrifuge.model import ModelConfig
from centrifuge.monitor import Validator
from centrifuge.train import train
from centrifuge.training_step import make_optimizer

TINY = ModelConfig(n_layers=2, width=0.125, final_endpoint="Mixed_3c")


def tb_scalars(run: Path, tag: str) -> dict[int, float]:
    """Scalars of the run's TensorBoard logs by step (later attempts replace what they purged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def tb_images(run: Path) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    return acc.Tags()["images"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[str]:
    # 32x32 videos of exactly 4 frames: with resize_factor 1 the window and the crop are fixed, so training
    # sees the same blend of the two videos again and again (only flipped): a set it can overfit.
    root = tmp_path_factory.mktemp("videos")
    paths = [root / f"v{i}.mp4" for i in range(2)]
    for i, p in enumerate(paths):
        make_video(p, frames=4, width=32, height=32, seed=i)
    return [str(p) for p in paths]


def tiny_config(videos: list[str], out: Path, **kw) -> TrainConfig:
    values = dict(data=list(videos), frames=4, size=32, resize_factor=1.0, batch_size=2, iterations=6,
                  optimizer="adamw", lr=0.01, preload=True, workers=0, log_every=1, ckpt_every=1000,
                  image_every=0, out=str(out), device="cpu", seed=0)
    values.update(kw)
    return TrainConfig(**values)


def test_training_overfits_one_blend(videos, tmp_path):
    run = tmp_path / "run"
    state = train(TINY, tiny_config(videos, run, iterations=100, image_every=50, val_data=list(videos),
                                    val_every=50), progress=False)
    assert state["step"] == 100
    losses = tb_scalars(run, "train/loss")
    assert sorted(losses) == list(range(1, 101))
    first = sum(losses[s] for s in (1, 2, 3)) / 3
    last = sum(losses[s] for s in range(91, 101)) / 10
    assert last < 0.5 * first, (first, last)
    assert json.loads((run / CONFIG).read_text())["step"] == 100
    assert (run / WEIGHTS).exists()
    assert tb_images(run) == ["blend|targets|outputs"]
    assert set(tb_scalars(run, "perf/clips_per_s")) == set(range(1, 101))
    # validation on the (here: training) pair, logged at steps 50 and 100 and kept with the checkpoint
    ratios = tb_scalars(run, "val/ratio")
    assert set(ratios) == {50, 100} and ratios[100] < ratios[50], ratios  # it is still learning at step 100
    assert state["val"]["pairs"] == 1 and state["val"]["ratio"] == pytest.approx(ratios[100], rel=1e-5)


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("ema, compile", [(0.0, False), (0.8, False), (0.0, True)])
def test_resume_reproduces_uninterrupted_run(videos, tmp_path, monkeypatch, ema, compile):
    # SGD with momentum and gradient accumulation (micro-batch 1): momentum buffers, BN running averages and
    # the step must all come back from the checkpoint for the weights to match; with --ema, the average too;
    # with --compile, compiling (a forward and backward pass at start-up) must leave no trace.
    kw = dict(iterations=6, ckpt_every=3, batch_size=2, micro_batch=1, optimizer="sgd", lr=0.02, momentum=0.9,
              ema=ema, compile=compile)
    full, cut = tmp_path / "full", tmp_path / "cut"
    train(TINY, tiny_config(videos, full, **kw), progress=False)

    class Failing(BlendDataset):
        def __getitem__(self, index: int):
            if index >= 4 * 2:  # dies in update 5: after the checkpoint at 3 and the log of step 4
                raise Interrupted
            return super().__getitem__(index)

    with monkeypatch.context() as m:
        m.setattr(train_module, "BlendDataset", Failing)
        with pytest.raises(Interrupted):
            train(TINY, tiny_config(videos, cut, **kw), progress=False)
    assert json.loads((cut / CONFIG).read_text())["step"] == 3
    assert 4 in tb_scalars(cut, "train/loss")  # logged past the checkpoint: the resumed run must replace it
    state = train(TINY, tiny_config(videos, cut, **kw), resume=True, progress=False)
    assert state["step"] == 6

    assert (full / LIVE_WEIGHTS).exists() == bool(ema)
    for name in (WEIGHTS, LIVE_WEIGHTS) if ema else (WEIGHTS,):
        a, b = load_file(str(full / name)), load_file(str(cut / name))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], msg=f"{name}: {key}")
    if ema:  # the saved model is the average, not the last weights
        a, b = load_file(str(full / WEIGHTS)), load_file(str(full / LIVE_WEIGHTS))
        assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    losses_full, losses_cut = tb_scalars(full, "train/loss"), tb_scalars(cut, "train/loss")
    assert sorted(losses_cut) == list(range(1, 7))
    for s in range(1, 7):
        assert losses_cut[s] == pytest.approx(losses_full[s], rel=1e-5), s


def test_resume_keeps_saved_settings_and_extends(videos, tmp_path):
    run = tmp_path / "run"
    train(TINY, tiny_config(videos, run, iterations=2), progress=False)
    # The saved run decides the model and the recipe; iterations may grow, and the lr (not resumable) is kept.
    other = ModelConfig(n_layers=3, width=0.25)
    state = train(other, tiny_config(videos, run, iterations=3, lr=0.5), resume=True, progress=False)
    assert state["step"] == 3
    assert state["model"] == TINY.to_dict()
    assert state["train"]["lr"] == 0.01 and state["train"]["iterations"] == 3


def test_compile_failure_trains_the_eager_model(videos, tmp_path, monkeypatch, caplog):
    # no C++ compiler (simulated): one warning each for the model and the loss, and the run trains eagerly
    monkeypatch.setattr(torch, "compile", broken_compile)
    with caplog.at_level(logging.WARNING, logger="centrifuge"):
        state = train(TINY, tiny_config(videos, tmp_path / "run", iterations=2, compile=True), progress=False)
    assert state["step"] == 2
    assert caplog.text.count("torch.compile of the model failed") == 1
    assert caplog.text.count("torch.compile of the loss failed") == 1


def test_lr_schedule_scales_to_the_run(videos, tmp_path):
    # The paper: 0.1, then 0.05 / 0.025 / 0.01 from iterations 100k / 150k / 200k of 240k.
    cfg = TrainConfig(iterations=24, lr=0.1)
    assert [cfg.lr_at(s) for s in range(24)] == pytest.approx([0.1] * 10 + [0.05] * 5 + [0.025] * 5 + [0.01] * 4)
    odd = TrainConfig(iterations=1000, lr=0.1)  # 416.7, 625, 833.3 round to 417, 625, 833
    assert [odd.lr_at(s) for s in (416, 417, 624, 625, 832, 833)] == pytest.approx(
        [0.1, 0.05, 0.05, 0.025, 0.025, 0.01])
    # What the optimizer used, step by step, in a 24-step run (logged lr of step s is that of update s-1).
    run = tmp_path / "run"
    train(TINY, tiny_config(videos, run, iterations=24, optimizer="sgd", lr=1e-3, momentum=0.0), progress=False)
    logged = tb_scalars(run, "train/lr")
    expected = [1e-3] * 10 + [5e-4] * 5 + [2.5e-4] * 5 + [1e-4] * 4
    assert [logged[s] for s in range(1, 25)] == pytest.approx(expected)


def test_split_batch():
    assert split_batch(10, 1, None) == (10, 10, 1)
    assert split_batch(10, 2, None) == (5, 5, 1)
    assert split_batch(10, 2, 1) == (5, 1, 5)
    assert split_batch(8, 2, 16) == (4, 4, 1)  # a micro-batch larger than the rank's batch is the batch
    with pytest.raises(ValueError, match="not divisible by 4 ranks"):
        split_batch(10, 4, None)
    with pytest.raises(ValueError, match="micro-batch 2"):
        split_batch(10, 2, 2)


CLI_TINY = ["--frames", "4", "--size", "32", "--width", "0.125", "--layers", "2", "--final-endpoint", "Mixed_3c",
            "--no-corrector", "--batch-size", "2", "--workers", "0", "--preload", "--device", "cpu", "--no-progress",
            "--log-every", "1", "--image-every", "0", "--optimizer", "adamw", "--lr", "0.01"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_cli_train_refuses_existing_run_and_resumes(videos, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", *videos, "--preset", "cpu-small", "--out", str(run), *CLI_TINY]
    assert main([*args, "--iterations", "2"]) == 0
    assert "trained to step 2" in capsys.readouterr().out

    assert main([*args, "--iterations", "2"]) == 2
    line = _error_line(capsys)
    assert line.startswith("centrifuge: error:") and "already holds a run" in line and "--resume" in line

    assert main([*args, "--iterations", "2", "--resume", "--overwrite"]) == 2
    assert "exclude each other" in _error_line(capsys)

    # resuming with a setting that changes the run is refused; the same command line plus --iterations is not
    assert main([*args, "--iterations", "3", "--resume", "--lr", "0.5"]) == 2
    line = _error_line(capsys)
    assert "lr" in line and "differ" in line
    assert main([*args, "--iterations", "3", "--resume"]) == 0
    assert json.loads((run / CONFIG).read_text())["step"] == 3
    # without --preset or data, --resume continues from the saved settings alone
    assert main(["train", "--out", str(run), "--resume", "--iterations", "4", "--no-progress", "--device", "cpu"]) == 0
    state = json.loads((run / CONFIG).read_text())
    assert state["step"] == 4 and state["train"]["data"] == videos and state["train"]["size"] == 32

    capsys.readouterr()
    assert main([*args, "--iterations", "1", "--overwrite"]) == 0
    assert json.loads((run / CONFIG).read_text())["step"] == 1


def test_cli_train_missing_data(tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    assert main(["train", str(missing), "--out", str(tmp_path / "run"), *CLI_TINY]) == 2
    line = _error_line(capsys)
    assert line.startswith("centrifuge: error:") and "no-such-folder" in line
    assert main(["train", "--out", str(tmp_path / "run"), *CLI_TINY]) == 2
    assert "no training data" in _error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_resume_keeps_the_fp16_loss_scale(videos, tmp_path):
    # the GradScaler's scale and growth counter travel with the checkpoint. A fresh scaler would start at 2^16
    # and keep it for 2,000 steps, so the checkpoint's are set to values a fresh one cannot have.
    run = tmp_path / "run"
    first = train(TINY, tiny_config(videos, run, iterations=2, precision="fp16", ckpt_every=1), progress=False)
    assert first["grad_scaler"]["_growth_tracker"] == 2
    state = json.loads((run / CONFIG).read_text())
    state["grad_scaler"].update(scale=8.0, _growth_tracker=7)
    (run / CONFIG).write_text(json.dumps(state))
    resumed = train(TINY, tiny_config(videos, run, iterations=4, precision="fp16", ckpt_every=1), resume=True,
                    progress=False)
    assert resumed["grad_scaler"]["_growth_tracker"] == 9  # 7, then two steps without overflow
    assert resumed["grad_scaler"]["scale"] == 8.0


def test_init_fine_tunes_from_given_weights(videos, tmp_path):
    first = tmp_path / "first"
    train(TINY, tiny_config(videos, first, iterations=2), progress=False)
    # another architecture is asked for, but --init brings its own; lr 0 keeps the weights as loaded
    other = ModelConfig(n_layers=3, width=0.125, final_endpoint="Mixed_3c")
    tuned = tmp_path / "tuned"
    state = train(other, tiny_config(videos, tuned, iterations=1, lr=0.0, init=str(first)), progress=False)
    assert state["model"] == TINY.to_dict() and state["train"]["init"] == str(first)
    a, b = load_file(str(first / WEIGHTS)), load_file(str(tuned / WEIGHTS))
    weights = [k for k in a if k.endswith("weight") and a[k].dim() == 5]
    assert weights and all(torch.equal(a[k], b[k]) for k in weights)
    with pytest.raises(CheckpointError):
        train(TINY, tiny_config(videos, tmp_path / "x", iterations=1, init=str(tmp_path / "missing")), progress=False)


def test_init_with_corrector_adds_a_new_corrector_after_the_given_predictor(videos, tmp_path):
    first = tmp_path / "first"
    train(TINY, tiny_config(videos, first, iterations=2), progress=False)
    tuned = tmp_path / "tuned"
    asked = ModelConfig(n_layers=3, width=0.25, corrector=True, corrector_steps=2)
    state = train(asked, tiny_config(videos, tuned, iterations=1, lr=0.0, init=str(first)), progress=False)
    # the predictor is --init's (its architecture and weights); the correctors asked for are new
    assert state["model"] == {**TINY.to_dict(), "corrector": True, "corrector_steps": 2}
    a, b = load_file(str(first / WEIGHTS)), load_file(str(tuned / WEIGHTS))
    weights = [k for k in a if k.endswith("weight") and a[k].dim() == 5]  # (BatchNorm's statistics move at lr 0)
    assert weights and all(torch.equal(a[k], b[f"predictor.{k}"]) for k in weights)
    assert any(k.startswith("correctors.1.") for k in b)
    # a new corrector adds about nothing, so training starts from --init's layers
    clip = torch.rand(1, 3, 4, 32, 32) * 2 - 1
    with torch.no_grad():
        before, after = load_model(first)[0].eval()(clip), load_model(tuned)[0].eval()(clip)
    assert (after - before).abs().max() < 0.05 < before.abs().max()


def test_init_default_starts_from_the_packaged_model(videos, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no folder called "default" here: the name means the packaged model
    tuned = tmp_path / "tuned"
    state = train(TINY, tiny_config(videos, tuned, iterations=1, lr=0.0, init="default"), progress=False)
    packaged = load_model(None)[0].state_dict()
    assert state["model"] == read_model_info(None)[0].to_dict() != TINY.to_dict()
    b = load_file(str(tuned / WEIGHTS))
    weights = [k for k in packaged if k.endswith("weight") and packaged[k].dim() == 5]
    assert weights and all(torch.equal(packaged[k], b[k]) for k in weights)
    # the clips an evaluation leaves out follow --init to the packaged model's list, as well as the run's own
    assert trained_clip_names(tuned) == {Path(v).name for v in videos} | set(read_model_info(None)[1]["trained_on"])


def test_cli_model_flags_reach_the_run(videos, tmp_path):
    run = tmp_path / "run"
    args = ["train", *videos, "--preset", "cpu-small", "--out", str(run), *CLI_TINY, "--iterations", "1"]
    assert main([*args, "--no-residual", "--decoder-width", "0.75", "--layers", "3", "--tone-grid", "4",
                 "--tone-curve"]) == 0
    model = json.loads((run / CONFIG).read_text())["model"]
    assert (model["residual"], model["decoder_width"], model["n_layers"], model["tone_grid"]) == (False, 0.75, 3, 4)
    assert model["tone_curve"] is True
    assert main([*args, "--overwrite"]) == 0
    model = json.loads((run / CONFIG).read_text())["model"]
    assert (model["residual"], model["decoder_width"], model["n_layers"]) == (True, 0.5, 2)  # preset; CLI_TINY layers


@pytest.mark.parametrize(("flags", "says"), [
    (["--ema", "1"], ["--ema 1", "between 0 and 1"]),
    (["--tone-grid", "3"], ["tone_grid", "0, 2, 4, 8 or 16", "3"]),
    (["--tone-curve"], ["tone_curve needs a tone_grid"]),
    (["--tone-free-loss", "-1"], ["--tone-free-loss -1", "at least 0"]),
    (["--reflection", "1.5"], ["--reflection 1.5", "[0, 1]"]),
    (["--tone-match", "1.5"], ["--tone-match 1.5", "[0, 1]"]),
    (["--reflection", "0.5", "--videos-per-blend", "3"], ["--reflection 0.5", "two videos per blend"]),
    (["--no-augment", "--resize-factor", "0.9"], ["--resize-factor 0.9", "at least 1.0"]),
])
def test_cli_train_refuses_a_bad_value(videos, tmp_path, capsys, flags, says):
    run = tmp_path / "run"
    args = ["train", *videos, "--preset", "cpu-small", "--out", str(run), *CLI_TINY, "--iterations", "1"]
    assert main([*args, *flags]) == 2
    line = _error_line(capsys)
    assert line.startswith("centrifuge: error:") and all(s in line for s in says)
    assert not (run / CONFIG).exists()


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_weight_decay_shrinks_kernels_but_not_batchnorm_or_biases(optimizer):
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.BatchNorm3d(4))
    with torch.no_grad():
        model[1].weight.fill_(2.0)
    before = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig(optimizer=optimizer, lr=0.1, momentum=0.0, weight_decay=0.5)
    opt = make_optimizer(model, cfg)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    kernel, bias, bn_weight, bn_bias = model.parameters()
    torch.testing.assert_close(kernel, before[0] * (1 - 0.1 * 0.5))  # AdamW's and SGD's decay agree here
    for p, b in zip((bias, bn_weight, bn_bias), before[1:], strict=True):
        torch.testing.assert_close(p, b)
    assert len(make_optimizer(model, TrainConfig(optimizer=optimizer, weight_decay=0.0)).param_groups) == 1


def test_ema_validation_scores_the_saved_average(videos, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(videos, run, iterations=4, ema=0.5, val_data=list(videos), val_every=4, precision="fp32")
    state = train(TINY, cfg, progress=False)
    validate = Validator(cfg, torch.device("cpu"), None)
    average, live = load_model(run)[0], load_model(run / LIVE_WEIGHTS)[0]
    assert state["val"]["ratio"] == pytest.approx(validate(average)["ratio"], rel=1e-4)
    assert validate(live)["ratio"] != pytest.approx(state["val"]["ratio"], rel=1e-4)
    assert not average.training  # validation leaves a model in the mode it found it in
