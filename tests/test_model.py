"""Tests for the I3D encoder, U-Net decoder, predictor and predictor-corrector (tiny widths, CPU)."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from centrifuge.model import (
    VALID_ENDPOINTS,
    I3DEncoder,
    InceptionBlock,
    MaxPool3dSame,
    ModelConfig,
    Predictor,
    PredictorCorrector,
    Unit3D,
    build_model,
    conv_depth,
    upsample_linear,
)

W = 0.125  # tiny channel width keeps every test fast
ENDPOINTS = ("Mixed_3c", "Mixed_4f", "Mixed_5c")
SIZES = ((5, 33, 47), (9, 20, 70))


@functools.cache
def _predictor(n: int, final_endpoint: str) -> Predictor:
    torch.manual_seed(0)
    return Predictor(n, 3, W, final_endpoint).eval()


@functools.cache
def _predictor_corrector(n: int, final_endpoint: str) -> PredictorCorrector:
    torch.manual_seed(0)
    return PredictorCorrector(n, W, final_endpoint).eval()


@pytest.mark.parametrize("endpoint,depth", [("Mixed_3c", 7), ("Mixed_4f", 17), ("Mixed_5c", 21)])
def test_conv_depth_matches_table_4(endpoint: str, depth: int) -> None:
    encoder = I3DEncoder(width=W, final_endpoint=endpoint)
    assert conv_depth(encoder) == depth
    assert conv_depth(_predictor(2, endpoint)) == depth


def test_conv_depth_counts_modules() -> None:
    assert conv_depth(Unit3D(4, 4, 3)) == 1
    assert conv_depth(MaxPool3dSame(3, 2)) == 0
    assert conv_depth(InceptionBlock(8, [4, 4, 4, 4, 4, 4])) == 2


def test_encoder_layout_full_width() -> None:
    enc = I3DEncoder()
    assert tuple(enc.endpoints) == VALID_ENDPOINTS
    expected = {"Conv3d_1a_7x7": 64, "Conv3d_2c_3x3": 192, "Mixed_3b": 256, "Mixed_3c": 480,
                "Mixed_4b": 512, "Mixed_4e": 528, "Mixed_4f": 832, "Mixed_5b": 832, "Mixed_5c": 1024}
    assert {k: enc.channels[k] for k in expected} == expected
    assert enc.strides["Conv3d_1a_7x7"] == (2, 2, 2)
    assert enc.strides["Conv3d_2c_3x3"] == (2, 4, 4)
    assert enc.strides["Mixed_3c"] == (2, 8, 8)
    assert enc.strides["Mixed_4f"] == (4, 16, 16)
    assert enc.total_stride == (8, 32, 32)
    assert enc.output_endpoints == ("Conv3d_1a_7x7", "Conv3d_2c_3x3", "Mixed_3c", "Mixed_4f", "Mixed_5c")


def test_encoder_stops_at_final_endpoint_and_sizes_are_same_padded() -> None:
    enc = I3DEncoder(width=W, final_endpoint="Mixed_4f").eval()
    assert list(enc.endpoints)[-1] == "Mixed_4f"
    size = (9, 33, 47)
    with torch.no_grad():
        out = enc(torch.randn(1, 3, *size))
    assert tuple(out) == ("Conv3d_1a_7x7", "Conv3d_2c_3x3", "Mixed_3c", "Mixed_4f")
    for name, feat in out.items():
        expected = tuple(math.ceil(n / s) for n, s in zip(size, enc.strides[name], strict=True))
        assert feat.shape == (1, enc.channels[name], *expected)


def test_same_padding_maxpool_ignores_padding() -> None:
    x = -1.0 - torch.rand(1, 2, 4, 7, 8)  # all negative: a zero-padded pool would output 0 at borders
    y = MaxPool3dSame((1, 3, 3), (1, 2, 2))(x)
    assert y.shape == (1, 2, 4, 4, 4)
    assert y.max() <= -1.0


def test_unknown_endpoint_raises() -> None:
    with pytest.raises(ValueError, match="final_endpoint"):
        I3DEncoder(final_endpoint="Logits")


@pytest.mark.parametrize("final_endpoint", ENDPOINTS)
@pytest.mark.parametrize("n", [2, 4])
def test_output_shapes_any_size(final_endpoint: str, n: int) -> None:
    pred, pc = _predictor(n, final_endpoint), _predictor_corrector(n, final_endpoint)
    for size in SIZES:
        x = torch.rand(1, 3, *size) * 2 - 1
        with torch.no_grad():
            assert pred(x).shape == (1, n, 3, *size)
            assert pc(x).shape == (1, n, 3, *size)


def test_pad_input_variant_shape() -> None:
    torch.manual_seed(0)
    model = Predictor(2, 3, W, "Mixed_4f", pad_input=True).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 5, 33, 47)).shape == (2, 2, 3, 5, 33, 47)


@pytest.mark.parametrize("pad_input", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_residual_layers_are_the_input_plus_the_decoder(pad_input: bool, training: bool) -> None:
    """With the head's output zeroed every layer is the input itself: padded or not, in inference and in
    training's channels-last layout (where the head adds the residual in its matrix product)."""
    torch.manual_seed(0)
    model = Predictor(2, 3, W, "Mixed_4f", pad_input=pad_input, residual=True).train(training)
    torch.nn.init.zeros_(model.decoder.head.weight)
    x = torch.rand(2, 3, 5, 33, 47) * 2 - 1
    if training:
        model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.set_grad_enabled(training):
        y = model(x)
    torch.testing.assert_close(y, x[:, None].expand_as(y), rtol=0, atol=1e-6)


def test_wrong_input_channels_raises() -> None:
    with pytest.raises(ValueError, match="expected"):
        _predictor(2, "Mixed_3c")(torch.rand(1, 6, 4, 16, 16))


def test_untrained_output_is_near_grey() -> None:
    torch.manual_seed(0)
    model = Predictor(2, 3, W, "Mixed_3c").train()
    out = model(torch.rand(2, 3, 4, 24, 24) * 2 - 1)
    assert out.abs().max() < 0.05


def test_predictor_corrector_steps() -> None:
    torch.manual_seed(0)
    model = PredictorCorrector(n_layers=2, width=W, final_endpoint="Mixed_3c", corrector_steps=2).eval()
    nets = [model.predictor, *model.correctors]
    assert len(nets) == 3
    assert nets[0].in_channels == 3 and all(c.in_channels == 6 for c in nets[1:])
    # Distinct weights: no shared tensors, and the two correctors (same shapes) differ in value.
    ptrs = [{p.data_ptr() for p in net.parameters()} for net in nets]
    assert not (ptrs[0] & ptrs[1]) and not (ptrs[0] & ptrs[2]) and not (ptrs[1] & ptrs[2])
    w1 = nets[1].encoder.endpoints["Conv3d_1a_7x7"].conv3d.weight
    w2 = nets[2].encoder.endpoints["Conv3d_1a_7x7"].conv3d.weight
    assert not torch.equal(w1, w2)

    x = torch.rand(1, 3, 5, 20, 28) * 2 - 1
    with torch.no_grad():
        outs = model(x, return_all=True)
        final = model(x)
        delta1 = model.correctors[0](outs[0].flatten(1, 2))
        delta2 = model.correctors[1](outs[1].flatten(1, 2))
    assert len(outs) == 3
    torch.testing.assert_close(outs[1] - outs[0], delta1)
    torch.testing.assert_close(outs[2], outs[0] + delta1 + delta2)
    torch.testing.assert_close(final, outs[-1])


def test_gradients_reach_predictor_and_corrector() -> None:
    torch.manual_seed(0)
    model = PredictorCorrector(n_layers=2, width=W, final_endpoint="Mixed_3c").train()
    target = torch.rand(2, 2, 3, 4, 16, 16) * 2 - 1
    out = model(torch.rand(2, 3, 4, 16, 16) * 2 - 1)
    (out - target).abs().mean().backward()
    for part in (model.predictor, model.correctors[0]):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert all(g.abs().sum() > 0 for g in grads)


def test_channels_last_matches_contiguous() -> None:
    model = _predictor(2, "Mixed_3c")
    x = torch.rand(1, 3, 5, 20, 28) * 2 - 1
    cl = torch.channels_last_3d
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=cl)(x.contiguous(memory_format=cl))
    model.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_model_config_round_trip() -> None:
    cfg = ModelConfig(n_layers=4, corrector=True, corrector_steps=2, width=W, final_endpoint="Mixed_3c")
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg
    model = build_model(again.to_dict())
    assert isinstance(model, PredictorCorrector) and len(model.correctors) == 2
    assert model.n_layers == 4
    assert isinstance(build_model(ModelConfig(width=W, final_endpoint="Mixed_3c")), Predictor)
    assert ModelConfig.from_dict({}) == ModelConfig()


def test_model_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown ModelConfig keys: bogus, extra"):
        ModelConfig.from_dict({"n_layers": 2, "extra": 1, "bogus": 2})
    with pytest.raises(ValueError, match="final_endpoint"):
        ModelConfig(final_endpoint="Mixed_9z")
    with pytest.raises(ValueError, match="n_layers"):
        ModelConfig(n_layers=0)


def test_residual_predictor_starts_at_the_input_and_follows_the_decoder() -> None:
    torch.manual_seed(0)
    plain = Predictor(2, 3, W, "Mixed_3c").eval()
    res = Predictor(2, 3, W, "Mixed_3c", residual=True).eval()
    res.load_state_dict(plain.state_dict())  # same parameters: the residual adds no weights
    x = torch.rand(1, 3, 5, 20, 28) * 2 - 1
    with torch.no_grad():
        out, delta = res(x), plain(x)
    torch.testing.assert_close(out, delta + x[:, None])
    assert (out - x[:, None]).abs().max() < 0.05  # untrained: each layer is about the input
    with pytest.raises(ValueError, match="3-channel"):
        Predictor(2, 6, W, "Mixed_3c", residual=True)
    pc = build_model(ModelConfig(n_layers=2, corrector=True, width=W, final_endpoint="Mixed_3c", residual=True))
    assert pc.predictor.residual and not pc.correctors[0].residual


def test_decoder_width_scales_only_the_decoder() -> None:
    thin = Predictor(2, 3, W, "Mixed_3c")
    wide = Predictor(2, 3, W, "Mixed_3c", decoder_width=1.0)

    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert count(wide.encoder) == count(thin.encoder)
    assert count(wide.decoder) > 2 * count(thin.decoder)
    assert wide.decoder.head.in_channels == 2 * thin.decoder.head.in_channels  # 8 * 1.0 vs max(4, 8 * 0.125)
    with torch.no_grad():
        assert wide.eval()(torch.rand(1, 3, 5, 20, 28)).shape == (1, 2, 3, 5, 20, 28)
    with pytest.raises(ValueError, match="decoder_width"):
        ModelConfig(decoder_width=0)


@pytest.mark.parametrize("kernel,stride", [(3, 1), (7, 2), (3, 2)])
def test_one_frame_convolves_with_its_one_temporal_tap(kernel, stride):
    from centrifuge.model import Unit3D, _flat_pad, _same_pads

    torch.manual_seed(0)
    unit = Unit3D(12, 16, kernel, stride).eval()
    x = torch.randn(2, 12, 1, 14, 14)
    pads = _same_pads(x.shape[-3:], unit.kernel_shape, unit.stride)
    with torch.no_grad():
        padded = torch.nn.functional.pad(x, _flat_pad(pads))
        full = torch.relu(unit.bn(torch.nn.functional.conv3d(padded, unit.conv3d.weight, None, unit.stride)))
        assert torch.allclose(unit(x), full, atol=1e-6)
        # bf16 on one frame takes the one-tap path: finite (oneDNN's kernel returned NaN here on AMX CPUs), and
        # the same sum within bf16 rounding
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = unit(x).float()
        assert torch.isfinite(low).all()
        assert (low - full).abs().max() < 0.05 * full.abs().max()


@pytest.mark.parametrize("grid", [4, 8])
@pytest.mark.parametrize("pad_input", [False, True])
def test_tone_grid_layers_are_the_input_re_toned_by_the_decoders_coefficients(grid: int, pad_input: bool) -> None:
    """With a constant head (zero weights, bias = gains then offsets per layer) each layer is exactly
    ``(1 + gain) * input + offset`` per colour channel, at any size; an untrained model is about the input."""
    torch.manual_seed(0)
    model = Predictor(2, 3, W, "Mixed_5c", pad_input=pad_input, tone_grid=grid)
    x = torch.rand(2, 3, 5, 33, 47) * 2 - 1
    with torch.no_grad():
        assert (model(x) - x[:, None]).abs().max() < 0.05  # batch statistics: the head sees normalised features
        model.eval()
        torch.nn.init.zeros_(model.decoder.head.weight)
        gain = torch.tensor([[0.5, -0.2, 0.1], [-0.9, 0.0, 0.3]])
        offset = torch.tensor([[0.1, 0.2, -0.3], [0.0, 0.4, 0.5]])
        model.decoder.head.bias.copy_(torch.stack([gain, offset], 1).flatten())  # per layer: gains, offsets
        y = model(x)
    want = x[:, None] * (1 + gain[None, :, :, None, None, None]) + offset[None, :, :, None, None, None]
    torch.testing.assert_close(y, want, rtol=0, atol=1e-5)


def test_tone_curve_adds_a_quadratic_term_per_channel_to_the_tone_map() -> None:
    """With a constant head (bias = gains, offsets, then quadratic terms per layer) each layer is exactly
    ``(1 + gain) * x + offset + quad * x²``; without the quadratic terms it is the plain tone grid's layer."""
    torch.manual_seed(0)
    model = Predictor(2, 3, W, "Mixed_5c", tone_grid=8, tone_curve=True).eval()
    assert model.decoder.head.out_channels == 18  # 3 coefficients per colour channel, per layer
    x = torch.rand(2, 3, 5, 33, 47) * 2 - 1
    gain = torch.tensor([[0.5, -0.2, 0.1], [-0.9, 0.0, 0.3]])
    offset = torch.tensor([[0.1, 0.2, -0.3], [0.0, 0.4, 0.5]])
    quad = torch.tensor([[0.3, -0.6, 0.0], [0.2, 0.1, -0.4]])
    with torch.no_grad():
        torch.nn.init.zeros_(model.decoder.head.weight)
        model.decoder.head.bias.copy_(torch.stack([gain, offset, quad], 1).flatten())
        y = model(x)
    c = {k: v[None, :, :, None, None, None] for k, v in dict(g=gain, o=offset, q=quad).items()}
    x5 = x[:, None]
    torch.testing.assert_close(y, x5 * (1 + c["g"]) + c["o"] + c["q"] * x5 * x5, rtol=0, atol=1e-5)
    assert (y - (x5 * (1 + c["g"]) + c["o"])).abs().max() > 0.1  # the quadratic term is used
    with pytest.raises(ValueError, match="tone_curve needs a tone_grid"):
        Predictor(2, 3, W, "Mixed_5c", tone_curve=True)
    with pytest.raises(ValueError, match="tone_curve needs a tone_grid"):
        ModelConfig(tone_curve=True)
    pc = build_model(ModelConfig(n_layers=2, corrector=True, width=W, tone_grid=8, tone_curve=True))
    assert pc.predictor.tone_curve and not pc.correctors[0].tone_curve


def test_tone_grid_stops_the_decoder_at_its_stride_and_varies_across_the_frame() -> None:
    torch.manual_seed(0)
    full, coarse = Predictor(2, 3, W, "Mixed_5c"), Predictor(2, 3, W, "Mixed_5c", tone_grid=8)
    assert list(coarse.decoder.stages) == ["Mixed_4f", "Mixed_3c"]
    assert list(full.decoder.stages)[-1] == "input"
    assert coarse.decoder.head.out_channels == 12  # a gain and an offset per colour channel, per layer
    with torch.no_grad():
        torch.nn.init.normal_(coarse.decoder.head.weight, std=1.0)
        coarse.decoder.head.weight.unflatten(0, (2, 2, 3))[:, 0] = 0  # no gains: each layer is input + offset
        x = torch.rand(1, 3, 8, 64, 64) * 2 - 1
        offset = (coarse.eval()(x) - x[:, None])[0, 0, 0, 0]
    # the offsets are upsampled from a grid of stride 8: smooth, and different across the frame
    assert offset.std() > 1e-3
    assert offset.diff(dim=-1).abs().max() < (offset.max() - offset.min()) / 4


def test_tone_grid_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="tone_grid must be 0, 2, 4, 8 or 16"):
        ModelConfig(tone_grid=3)
    with pytest.raises(ValueError, match=r"tone_grid must be 0 or one of \[2, 4\]"):
        Predictor(2, 3, W, "Mixed_3c", tone_grid=16)  # no decoder stage at stride 16 below Mixed_3c
    with pytest.raises(ValueError, match="3-channel"):
        Predictor(2, 6, W, "Mixed_3c", tone_grid=4)
    pc = build_model(ModelConfig(n_layers=2, corrector=True, width=W, final_endpoint="Mixed_4f", tone_grid=4))
    assert pc.predictor.tone_grid == 4 and pc.correctors[0].tone_grid == 0
    assert ModelConfig.from_dict(ModelConfig(tone_grid=8).to_dict()).tone_grid == 8


@pytest.mark.parametrize("size", [(16, 96, 96), (5, 33, 47), (4, 8, 8)])
def test_upsample_linear_is_trilinear_interpolation(size):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, 3, 6, dtype=torch.float64, requires_grad=True)
    ref = torch.nn.functional.interpolate(x, size=size, mode="trilinear", align_corners=False)
    got = upsample_linear(x, size)
    torch.testing.assert_close(got, ref)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(ref, x, g)[0])
