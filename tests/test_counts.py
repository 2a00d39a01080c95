"""Parameter and FLOP counts (``bench``, the model's documented figures) against independent counts: the
published I3D table, one convolution's ``2 Cin Cout k^3 T H W``, and per-layer counts read from hooks."""

from __future__ import annotations

import pytest
import torch
from reference_counts import conv_flops_by_hooks, decoder_parameters, i3d_parameters
from torch import nn

from centrifuge import bench
from centrifuge.bench import BenchSettings, bench_inference, bench_training
from centrifuge.model import I3DEncoder, ModelConfig, build_model
from centrifuge.perf import count_flops

SMALL = ModelConfig(n_layers=3, width=0.125, decoder_width=0.25)


def _parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_i3d_has_the_published_parameter_count_up_to_mixed_5c():
    # 12,272,704 convolution weights + 7,280 BatchNorm channels x (scale, offset) = 12,287,264, as PyTorch
    # counts I3D (BatchNorm3d has both). DeepMind's TensorFlow original has an offset only (12,279,984).
    assert i3d_parameters(1.0, bn_per_channel=0) == 12_272_704
    assert i3d_parameters(1.0) == 12_287_264
    assert _parameters(I3DEncoder(width=1.0)) == 12_287_264
    convs = [m for m in I3DEncoder(width=1.0).modules() if isinstance(m, nn.Conv3d)]
    assert sum(c.weight.numel() for c in convs) == 12_272_704 and all(c.bias is None for c in convs)


@pytest.mark.parametrize("width", [0.25, 0.5])
def test_scaled_encoder_and_decoder_parameters(width):
    model = build_model(ModelConfig(n_layers=4, width=width, decoder_width=2 * width))
    assert _parameters(model.encoder) == i3d_parameters(width)
    assert _parameters(model.decoder) == decoder_parameters(width, 2 * width, 4)


def test_one_convolution_costs_2_cin_cout_k3_per_output_voxel():
    cin, cout, k, t, h, w, batch = 4, 6, 3, 5, 7, 9, 2
    conv = nn.Conv3d(cin, cout, k, padding=1, bias=False)
    expected = 2 * cin * cout * k ** 3 * t * h * w * batch  # 326,592
    assert count_flops(conv, torch.zeros(batch, cin, t, h, w)) == expected
    assert count_flops(conv.to("meta"), torch.zeros(batch, cin, t, h, w, device="meta")) == expected


def _fake_time(monkeypatch, seconds: float) -> None:
    """Every timed call (still run, once) is reported as ``seconds``: the figures derived from it are exact."""
    def time_call(fn, repeats, warmup=1, device=None):
        fn()
        return [seconds] * repeats

    monkeypatch.setattr(bench, "time_call", time_call)


def test_bench_inference_flops_and_rates_per_clip(monkeypatch):
    frames, size, batch = 8, 32, 3
    _fake_time(monkeypatch, 0.6)
    torch.manual_seed(0)
    per_conv = conv_flops_by_hooks(build_model(SMALL).eval(), torch.zeros(1, 3, frames, size, size))
    expected = sum(per_conv.values())
    r = bench_inference(BenchSettings(model=SMALL, frames=frames, size=size, batch=batch, repeats=1, warmup=0,
                                      precision="fp32"))
    assert r["gflop_per_clip"] * 1e9 == pytest.approx(expected, rel=1e-12)  # a batch of 3, divided by 3
    assert r["seconds_per_clip"] == pytest.approx(0.2)
    assert r["achieved_gflops"] == pytest.approx(expected / 0.2 / 1e9)
    enc = sum(v for k, v in per_conv.items() if k.startswith("encoder."))
    dec = sum(v for k, v in per_conv.items() if k.startswith("decoder."))
    assert enc + dec == expected and enc > 0 and dec > 0
    assert r["encoder_gflop_per_clip"] * 1e9 == pytest.approx(enc, rel=1e-12)
    assert r["decoder_gflop_per_clip"] * 1e9 == pytest.approx(dec, rel=1e-12)
    assert r["split"]["predictor.encoder"]["seconds_per_clip"] == pytest.approx(0.2)


def test_bench_training_flops_are_forward_plus_both_gradients(monkeypatch):
    # backward: a weight gradient per convolution (as much as its forward) and an input gradient for every
    # convolution but the first, whose input is the clip itself (no gradient wanted)
    frames, size, batch = 4, 32, 2
    _fake_time(monkeypatch, 0.5)
    per_conv = conv_flops_by_hooks(build_model(SMALL).eval(), torch.zeros(1, 3, frames, size, size))
    forward = sum(per_conv.values())
    expected = 3 * forward - per_conv["encoder.endpoints.Conv3d_1a_7x7"]
    r = bench_training(BenchSettings(model=SMALL, frames=frames, size=size, train_batch=batch, repeats=1, warmup=0,
                                     precision="fp32", compile_loss=False))
    assert r["batch"] == batch
    assert r["gflop_per_clip"] * 1e9 == pytest.approx(expected, rel=1e-12)
    assert r["clips_per_s"] == pytest.approx(batch / 0.5)
    assert r["achieved_gflops"] == pytest.approx(expected * batch / 0.5 / 1e9)
