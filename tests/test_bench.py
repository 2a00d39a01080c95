"""`centrifuge bench` and the inference fast paths, on tiny models (no timing assertions)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import make_video

from centrifuge.bench import BenchSettings, format_report, predictor_parts, run_bench
from centrifuge.cli import main
from centrifuge.devices import resolve_precision
from centrifuge.inference import (
    CpuKernels,
    OneDNNUnit3D,
    fold_batch_norm,
    onednn_available,
    prepare_for_inference,
)
from centrifuge.model import ModelConfig, Predictor, PredictorCorrector, Unit3D
from centrifuge.training_step import train_step

TINY = ModelConfig(n_layers=2, corrector=True, width=0.125)


def _finite_positive(value: float) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def _randomise_batch_norm(model: torch.nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, so folding them has something to get wrong."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    for p in predictor_parts(model):
        # the head starts near zero; make the output depend visibly on everything before it
        torch.nn.init.normal_(p[1].decoder.head.weight, std=0.1, generator=g)


@pytest.fixture(scope="module")
def tiny_pc() -> PredictorCorrector:
    torch.manual_seed(0)
    model = PredictorCorrector(2, 0.125).eval()
    _randomise_batch_norm(model)
    return model


def test_bench_json_keys_are_finite_and_positive(tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "--width", "0.125", "--layers", "2", "--frames", "4", "--size", "16", "--repeats", "1",
            "--warmup", "0", "--train", "--train-batch", "2", "--threads", "1", "--peak-size", "256",
            "--peak-seconds", "0.01", "--json", str(out)]
    assert main(args) == 0
    r = json.loads(out.read_text())
    for key in ("seconds_per_clip", "gflop_per_clip", "achieved_gflops", "peak_gflops", "fraction_of_peak",
                "encoder_seconds_per_clip", "decoder_seconds_per_clip", "encoder_gflop_per_clip",
                "decoder_gflop_per_clip"):
        assert _finite_positive(r[key]), (key, r[key])
    assert set(r["split"]) == {"predictor.encoder", "predictor.decoder", "corrector_0.encoder", "corrector_0.decoder"}
    assert r["encoder_gflop_per_clip"] + r["decoder_gflop_per_clip"] == pytest.approx(r["gflop_per_clip"], rel=1e-6)
    for key in ("seconds_per_step", "clips_per_s", "gflop_per_clip", "achieved_gflops", "peak_gflops",
                "fraction_of_peak"):
        assert _finite_positive(r["train"][key]), (key, r["train"][key])
    # a training step is a forward, a backward (about twice the forward) and an update
    assert 2.5 < r["train"]["gflop_per_clip"] / r["gflop_per_clip"] < 3.5
    s = r["settings"]
    assert (s["frames"], s["size"], s["batch"], s["model"]["n_layers"], s["model"]["corrector"]) == (4, 16, 1, 2, True)
    assert "compiled loss True" in format_report(r)
    # the JSON is not replaced unless asked
    assert main(args) == 2
    assert main([*args, "--overwrite", "--no-split", "--profile", "5"]) == 0
    r = json.loads(out.read_text())
    assert "split" not in r
    assert len(r["profile"]) == 5 and all(row["calls"] >= 1 and row["self_ms"] >= 0 for row in r["profile"])


def test_bench_runs_and_names_a_tone_grid_model(capsys):
    args = ["bench", "--width", "0.125", "--layers", "2", "--frames", "4", "--size", "16", "--repeats", "1",
            "--warmup", "0", "--threads", "1", "--peak-size", "256", "--peak-seconds", "0.01", "--no-split",
            "--tone-grid", "8", "--train", "--train-batch", "2"]
    assert main(args) == 0  # a predictor-corrector: the corrector reads the re-toned layers, cast or autocast
    assert "model: PC-2 width 0.125 to Mixed_5c, tone grid 8;" in capsys.readouterr().out


def test_bench_times_the_step_that_training_runs(monkeypatch):
    import centrifuge.bench as bench

    runs = []

    def step(run, *args, **kwargs):
        runs.append(run)
        return train_step(run, *args, **kwargs)

    monkeypatch.setattr(bench, "train_step", step)
    model = ModelConfig(n_layers=2, width=0.125, final_endpoint="Mixed_3c")
    r = bench.bench_training(BenchSettings(model=model, frames=4, size=16, train_batch=2, repeats=2, warmup=1,
                                           precision="fp32", compile_loss=False))
    assert len(runs) == 3 and runs[0].micro == 2 and runs[0].accum == 1  # one warm-up, two timed
    assert list(r["parts_seconds"]) == ["forward", "loss", "backward", "optimizer"]
    assert all(_finite_positive(v) for v in r["parts_seconds"].values())


def test_bench_data_loading_from_a_folder(tmp_path):
    for i in range(3):
        make_video(tmp_path / f"v{i}.mp4", frames=12, width=40, height=32, seed=i)
    s = BenchSettings(model=TINY, frames=4, size=16, inference=False, data=str(tmp_path), workers=(0,),
                      data_batches=2, data_batch=2)
    r = run_bench(s)
    assert r["data"]["videos"] == 3 and r["data"]["cache"] is False
    assert _finite_positive(r["data"]["clips_per_s"]["0"])
    assert "seconds_per_clip" not in r
    assert "compiled loss" not in format_report(r)  # no training step was timed


def test_bench_data_from_photos(tmp_path):
    from PIL import Image

    for i in range(2):
        Image.fromarray(np.full((40, 50, 3), 60 * i, dtype=np.uint8)).save(tmp_path / f"p{i}.png")
    s = BenchSettings(model=TINY, frames=4, size=16, inference=False, photos=(str(tmp_path),), workers=(0,),
                      data_batches=2, data_batch=2)
    r = run_bench(s)
    assert r["data"]["photos"] == 2 and r["data"]["videos"] == 0
    assert _finite_positive(r["data"]["clips_per_s"]["0"])
    assert "data (photos, 0 workers)" in format_report(r)


@pytest.mark.parametrize("args, message", [
    (["--batch", "0"], "--batch must be >= 1"),
    (["--no-inference"], "nothing to measure"),
    (["--data", "does-not-exist"], "no such folder"),
    (["--preset", "no-such-preset"], "unknown preset"),
])
def test_bench_bad_input_is_one_line(args, message, capsys):
    assert main(["bench", "--width", "0.125", "--frames", "4", "--size", "16", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("centrifuge: error:") and message in err[0], err


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("cpu_kernels", [False, True])
def test_prepared_model_matches_the_original(tiny_pc, channels_last, cpu_kernels):
    x = torch.rand(2, 3, 5, 33, 47) * 2 - 1  # odd sizes: asymmetric "SAME" padding and cropped upsampling
    with torch.no_grad():
        ref = tiny_pc(x)
    before = {k: v.clone() for k, v in tiny_pc.state_dict().items()}
    fast = prepare_for_inference(tiny_pc, "cpu", "fp32", channels_last=channels_last, cpu_kernels=cpu_kernels)
    y = fast(x)
    assert y.dtype == torch.float32 and y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    # the original is untouched (BatchNorm still there, same weights)
    assert all(torch.equal(before[k], v) for k, v in tiny_pc.state_dict().items())
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in tiny_pc.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in fast.module.modules())
    units = sum(isinstance(m, OneDNNUnit3D) for m in fast.module.modules())
    assert units == (sum(isinstance(m, Unit3D) for m in tiny_pc.modules()) if cpu_kernels and onednn_available() else 0)
    # another input shape (weights are packed per shape)
    with torch.no_grad():
        torch.testing.assert_close(fast(x[:1, :, :4, :20]), tiny_pc(x[:1, :, :4, :20]), rtol=1e-4, atol=1e-4)
    # bf16: the whole network is cast; close to fp32 at bf16's resolution
    half = prepare_for_inference(tiny_pc, "cpu", "bf16", channels_last=channels_last, cpu_kernels=cpu_kernels)
    assert next(half.module.parameters()).dtype == torch.bfloat16
    yb = half(x)
    assert yb.dtype == torch.float32
    assert (yb - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.parametrize("cpu_kernels", [False, True])
def test_prepared_tone_grid_model_matches_the_original(cpu_kernels):
    """The tone-grid head (coefficients upsampled onto the input) survives folding, packing and bf16."""
    torch.manual_seed(0)
    net = Predictor(2, 3, 0.125, "Mixed_4f", tone_grid=8)
    torch.nn.init.normal_(net.decoder.head.weight, std=0.2)
    net.eval()
    x = torch.rand(1, 3, 5, 33, 47) * 2 - 1
    with torch.no_grad():
        ref = net(x)
    y = prepare_for_inference(net, "cpu", "fp32", channels_last=True, cpu_kernels=cpu_kernels)(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    yb = prepare_for_inference(net, "cpu", "bf16", channels_last=True, cpu_kernels=cpu_kernels)(x)
    assert yb.dtype == torch.float32 and (yb - ref).abs().max() < 0.05 * ref.abs().max()


def test_fold_batch_norm_counts_and_keeps_eval_output():
    torch.manual_seed(0)
    model = Predictor(2, 3, 0.125).eval()
    _randomise_batch_norm(model)
    x = torch.rand(1, 3, 4, 24, 24) * 2 - 1
    with torch.no_grad():
        ref = model(x)
        n_bn = sum(isinstance(m, torch.nn.BatchNorm3d) for m in model.modules())
        assert fold_batch_norm(model) == n_bn
        assert fold_batch_norm(model) == 0  # nothing left to fold
        torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-5)


def test_cpu_kernels_match_the_reference_ops():
    torch.manual_seed(0)
    cl = torch.channels_last_3d
    x = torch.randn(2, 6, 5, 9, 11).to(memory_format=cl)
    w = torch.randn(4, 6, 3, 3, 3).to(memory_format=cl)
    b = torch.randn(4)
    wt = torch.randn(6, 4, 2, 2, 2).to(memory_format=cl)
    with torch.inference_mode():
        ref = [F.conv3d(x, w, b, 1, 1), F.conv3d(x, w, None, 2, 0), F.conv_transpose3d(x, wt, b, 2),
               F.max_pool3d(x, 3, 1, 1), F.max_pool3d(x, (1, 3, 3), (1, 2, 2), (0, 1, 1)),
               F.pad(x, [0, 1, 1, 0, 1, 1], value=float("-inf"))]
        with CpuKernels():
            out = [F.conv3d(x, w, b, 1, 1), F.conv3d(x, w, None, 2, 0), F.conv_transpose3d(x, wt, b, 2),
                   F.max_pool3d(x, 3, 1, 1), F.max_pool3d(x, (1, 3, 3), (1, 2, 2), (0, 1, 1)),
                   F.pad(x, [0, 1, 1, 0, 1, 1], value=float("-inf"))]
    for r, o in zip(ref, out, strict=True):
        assert o.shape == r.shape
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)
    # the rerouted ops keep the channels-last layout the next convolution wants
    for o in (out[0], out[2], out[3], out[5]):
        assert o.is_contiguous(memory_format=cl)
    # tensors that need gradients are left to PyTorch's own kernels (training is unchanged)
    xg = x.detach().clone().requires_grad_(True)
    with CpuKernels():
        F.conv3d(xg, w, b, 1, 1).sum().backward()
    assert xg.grad is not None and xg.grad.shape == x.shape


def test_cpu_kernels_route_each_op_to_its_kernel_and_pass_the_rest_on(monkeypatch):
    import centrifuge.inference as inference

    taken: list[str] = []
    for func, route in list(inference._CPU_ROUTES.items()):
        def counted(*args, route=route, **kwargs):
            taken.append(route.__name__)
            return route(*args, **kwargs)
        monkeypatch.setitem(inference._CPU_ROUTES, func, counted)
    x = torch.randn(1, 4, 3, 5, 5).to(memory_format=torch.channels_last_3d)
    with torch.inference_mode(), CpuKernels():
        F.conv3d(x, torch.randn(4, 4, 1, 1, 1))
        F.max_pool3d(x, 3, 1, 1)
        F.conv_transpose3d(x, torch.randn(4, 2, 2, 2, 2), stride=2)
        F.pad(x, [0, 1])
        relu = F.relu(x)  # not rerouted: PyTorch's own
    assert taken == ["_conv3d", "_max_pool3d", "_conv_transpose3d", "_pad"]
    torch.testing.assert_close(relu, x.clamp(min=0))


def test_resolve_precision(monkeypatch):
    import centrifuge.devices

    assert resolve_precision("fp32", "cpu") == torch.float32
    assert resolve_precision("bf16", "cpu") == torch.bfloat16
    # auto on CPU: bf16 only where the hardware multiplies bf16 (AMX), fp32 elsewhere; both machines, here
    for fast, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(centrifuge.devices, "cpu_has_fast_bf16", lambda fast=fast: fast)
        assert resolve_precision("auto", "cpu") == dtype
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8", "cpu")
